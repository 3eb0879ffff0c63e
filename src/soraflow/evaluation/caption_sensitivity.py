"""Caption sensitivity: does the model use each word of its prompt?

For held-out clips of the demo corpus, the velocity (or noise) MSE at a few fixed timesteps is
measured twice on the same noise: with the clip's own caption, and with one attribute word
swapped (``red`` -> ``green``, ``circle`` -> ``square``, ``moving left`` -> ``moving right``).
A model that reads the word predicts the real clip better with the right caption, so the loss
rises when the word is swapped; a model that ignores it scores the same.

This sees what sampling hides: prompt-following accuracies need a model good enough to draw a
readable video, and each is a few dozen coin flips; the loss gap is measured on every clip, on
the same noise, and says which attribute the model conditions on and how strongly (on the demo,
a model can follow colour perfectly and still be blind to direction words).

Metrics: ``caption_sensitivity_<attr>`` = mean relative loss increase (0.05 = 5% higher loss
with the wrong word), ``caption_sensitivity_<attr>_frac_worse`` = share of (clip, timestep)
pairs where the swapped caption is worse (0.5 = no preference).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from soraflow.evaluation.classifier import ATTRIBUTES
from soraflow.evaluation.prompts import COLOR_LABELS, SHAPE_LABELS, try_parse_caption

__all__ = ["ATTRIBUTES", "caption_sensitivity", "swap_attribute", "swapped_caption_losses"]

log = logging.getLogger(__name__)


_MOVING = ("left", "right", "up", "down")
#: Each direction's swap: its opposite, the hardest confusion for a motion model.
_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def swap_attribute(caption: str, attribute: str) -> str | None:
    """``caption`` with one attribute word replaced by another value, or None when the caption
    does not parse or has no such word (a still object has no direction to swap)."""
    attrs = try_parse_caption(caption)
    if attrs is None:
        return None
    if attribute == "color":
        old, new = attrs.color, COLOR_LABELS[(COLOR_LABELS.index(attrs.color) + 1) % len(COLOR_LABELS)]
    elif attribute == "shape":
        old, new = attrs.shape, SHAPE_LABELS[(SHAPE_LABELS.index(attrs.shape) + 1) % len(SHAPE_LABELS)]
    elif attribute == "direction":
        if attrs.direction not in _MOVING:
            return None
        old, new = f"moving {attrs.direction}", f"moving {_OPPOSITE[attrs.direction]}"
    else:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTES}")
    # the first occurrence is the object's (colours and shapes come before the background words)
    swapped, n = re.subn(rf"\b{re.escape(old)}\b", new, caption, count=1)
    return swapped if n else None


@torch.no_grad()
def swapped_caption_losses(
    model: nn.Module,
    diffusion: Any,
    batch: dict[str, torch.Tensor],
    caption: str,
    encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
    attributes: Sequence[str],
    timesteps: Sequence[float],
    *,
    seed: int,
    first_frame_given: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Loss ``[K]`` at each timestep of one cached row (a one-row ``FeatureCache.batch``) with
    its own ``caption``, and per attribute with that word swapped (attributes without such a
    word are left out), on the same noise (drawn from ``seed``). ``first_frame_given``: the
    first frame is a clean conditioning frame (image-to-video), the loss covers the others."""
    device = next(model.parameters()).device
    x = batch["latents"].to(device)
    noise = torch.randn(x.shape, generator=torch.Generator(device="cpu").manual_seed(seed)).to(device)
    kwargs = {k: batch[k].to(device) for k in ("height", "width", "num_frames", "fps")}
    x_mask = None
    if first_frame_given:
        x_mask = torch.ones(x.shape[0], x.shape[2], dtype=torch.bool, device=device)
        x_mask[:, 0] = False
    swaps = {a: swap_attribute(caption, a) for a in attributes}
    swaps = {a: c for a, c in swaps.items() if c is not None}
    y, mask = encode([caption, *swaps.values()])
    losses = [
        diffusion.loss_at_timesteps(
            model, x, {**kwargs, "y": y[j : j + 1].to(device), "mask": mask[j : j + 1].to(device)},
            timesteps=timesteps, noise=noise, x_mask=x_mask,
        )[:, 0].float().cpu().numpy()
        for j in range(len(swaps) + 1)
    ]
    return losses[0], dict(zip(swaps, losses[1:]))


@torch.no_grad()
def caption_sensitivity(
    model: nn.Module,
    diffusion: Any,
    cache: Any,
    encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
    *,
    max_clips: int = 64,
    timesteps: Sequence[float] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Relative loss increase per swapped attribute over up to ``max_clips`` rows of ``cache``
    (a held-out :class:`~soraflow.features.cache.FeatureCache`): see the module docstring.

    ``encode(captions) -> (y, mask)`` is the frozen text encoder. ``timesteps`` default to
    30%, 50%, 70% and 90% of the diffusion's range (where layout and motion are decided).
    """
    index = cache.index
    texts = index["text"].astype(str).tolist()
    frames = index["bucket_num_frames"].astype(int).tolist()
    # video rows only, one window per caption, in a fixed order
    seen: set[str] = set()
    rows = []
    for i, (text, t) in enumerate(zip(texts, frames)):
        if t > 1 and text not in seen and try_parse_caption(text) is not None:
            seen.add(text)
            rows.append(i)
    rows = rows[:max_clips]
    if not rows:
        return {}
    T = float(diffusion.num_timesteps)
    ts = list(timesteps) if timesteps is not None else [0.3 * T, 0.5 * T, 0.7 * T, 0.9 * T]
    was_training = model.training
    model.eval()
    gaps: dict[str, list[np.ndarray]] = {a: [] for a in ATTRIBUTES}
    bases: dict[str, list[np.ndarray]] = {a: [] for a in ATTRIBUTES}
    for n, r in enumerate(rows):
        base, swapped = swapped_caption_losses(
            model, diffusion, cache.batch([r]), texts[r], encode, ATTRIBUTES, ts, seed=seed * 1_000_003 + n
        )
        for a, loss in swapped.items():
            gaps[a].append(loss - base)
            bases[a].append(base)
    model.train(was_training)
    out: dict[str, float] = {}
    for a in ATTRIBUTES:
        if not gaps[a]:
            continue
        g, b = np.stack(gaps[a]), np.stack(bases[a])
        out[f"caption_sensitivity_{a}"] = float(g.mean() / max(b.mean(), 1e-12))
        out[f"caption_sensitivity_{a}_frac_worse"] = float((g > 0).mean())
        out[f"caption_sensitivity_{a}_clips"] = float(len(g))
    log.info(
        "caption sensitivity (relative loss increase with a swapped word): %s",
        ", ".join(f"{a} {out.get(f'caption_sensitivity_{a}', float('nan')):+.2%}" for a in ATTRIBUTES),
    )
    return out
