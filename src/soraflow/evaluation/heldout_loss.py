"""Held-out diffusion loss: the training loss on clips never trained on, at fixed timesteps.

Open-Sora 1.2 evaluated its loss at 10 evenly spaced timesteps; so does this, per bucket, on
the held-out rows of the feature cache. The noise is drawn from a seeded generator per batch
and shared by all timesteps of a batch, so two models are compared on the same noise and
timesteps differ only by the noise level.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["HeldoutLoss", "bucket_key", "heldout_loss", "timestep_key"]

log = logging.getLogger(__name__)

_BUCKET_COLUMNS = ["bucket_resolution", "bucket_num_frames", "bucket_height", "bucket_width"]


def timestep_key(t: float) -> str:
    """``heldout_loss_t050`` for timestep 50 (rounded; rectified-flow timesteps are floats)."""
    return f"heldout_loss_t{int(round(float(t))):03d}"


def bucket_key(resolution: str, num_frames: int, height: int, width: int) -> str:
    """``heldout_loss_32px_8x32x32``: a flat metric name per bucket."""
    return f"heldout_loss_{resolution}_{int(num_frames)}x{int(height)}x{int(width)}".replace("/", "_").replace(":", "_")


@dataclass
class HeldoutLoss:
    """``loss``: mean over rows and timesteps; ``table``: one row per (bucket, timestep) with
    ``bucket``, ``timestep``, ``loss`` (mean over the bucket's rows), ``rows``."""

    loss: float
    table: pd.DataFrame

    def by_timestep(self) -> pd.DataFrame:
        """``timestep``, ``loss``: row-weighted mean over buckets (the dvc plot)."""
        t = self.table.assign(w=self.table["loss"] * self.table["rows"])
        g = t.groupby("timestep", as_index=False)[["w", "rows"]].sum()
        return pd.DataFrame({"timestep": g["timestep"], "loss": g["w"] / g["rows"]})

    def by_bucket(self) -> pd.DataFrame:
        """``bucket``, ``loss`` (mean over timesteps), ``rows``."""
        g = self.table.groupby("bucket", as_index=False).agg(loss=("loss", "mean"), rows=("rows", "first"))
        return g

    def metrics(self) -> dict[str, float]:
        out = {"heldout_loss": float(self.loss)}
        for row in self.by_timestep().itertuples():
            out[timestep_key(row.timestep)] = float(row.loss)
        for row in self.by_bucket().itertuples():
            out[row.bucket] = float(row.loss)
        out["heldout_loss_rows"] = float(self.table.groupby("bucket")["rows"].first().sum())
        return out


def _kwargs(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: batch[k].to(device) for k in ("y", "mask", "height", "width", "num_frames", "fps") if k in batch}


@torch.no_grad()
def heldout_loss(
    model: nn.Module,
    diffusion: Any,
    cache: Any,
    *,
    num_timesteps: int = 10,
    batch_size: int = 32,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> HeldoutLoss:
    """Loss of ``model`` on every row of ``cache`` (a :class:`soraflow.features.cache.FeatureCache`
    opened on the held-out split, or anything with ``index`` and ``batch(rows)``).

    ``diffusion.loss_at_timesteps(model, x, kwargs, timesteps, noise)`` gives ``[K, B]``; the
    result averages rows and timesteps. Raises ``ValueError`` on an empty cache.
    """
    index = cache.index
    if len(index) == 0:
        raise ValueError("the held-out feature cache has no rows (no held-out clip fits a bucket?)")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    timesteps = diffusion.eval_timesteps(num_timesteps)
    was_training = model.training
    model.eval()
    sums: dict[tuple[str, float], float] = {}
    rows: dict[str, int] = {}
    groups = index.groupby(_BUCKET_COLUMNS, observed=True, sort=True)
    total = sum(int(np.ceil(len(g) / batch_size)) for _, g in groups)
    bar = tqdm(total=total, desc="held-out loss", disable=not progress, mininterval=1.0)
    batch_no = 0
    for (res, t, h, w), group in groups:
        name = bucket_key(str(res), int(t), int(h), int(w))
        positions = [index.index.get_loc(i) for i in group.index]
        for i in range(0, len(positions), batch_size):
            chunk = positions[i : i + batch_size]
            batch = cache.batch(chunk)
            x = batch["latents"].to(device)
            gen = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + batch_no)
            noise = torch.randn(x.shape, generator=gen).to(device)
            losses = diffusion.loss_at_timesteps(model, x, _kwargs(batch, device), timesteps=timesteps, noise=noise)
            per_t = losses.float().sum(dim=1).cpu().tolist()  # [K]
            for tv, s in zip(timesteps, per_t):
                sums[(name, float(tv))] = sums.get((name, float(tv)), 0.0) + s
            rows[name] = rows.get(name, 0) + len(chunk)
            batch_no += 1
            bar.update(1)
    bar.close()
    model.train(was_training)
    table = pd.DataFrame(
        [{"bucket": b, "timestep": t, "loss": s / rows[b], "rows": rows[b]} for (b, t), s in sums.items()]
    ).sort_values(["bucket", "timestep"], ignore_index=True)
    overall = float(sum(sums.values()) / (sum(rows.values()) * len(timesteps)))
    return HeldoutLoss(loss=overall, table=table)
