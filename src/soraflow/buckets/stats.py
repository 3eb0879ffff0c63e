"""Bucket statistics: clips, batches and tokens per bucket, as a table and a plot.

Tokens follow the STDiT2 layout: a 2-D image VAE shrinks each frame by ``vae_downsample``
(the SD VAE gives ``floor(H / 8)``), and the model cuts the latent into ``patch_size``
(T, H, W) patches, padding up to whole patches. So one clip of a bucket is
``ceil(T / pt) * ceil((H // ds) / ph) * ceil((W // ds) / pw)`` tokens, and a batch is that times
the batch size. Equal tokens per batch across buckets is what the original's batch-size
search aimed at (every step about the same time).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from soraflow.buckets.assign import REASONS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["STAT_COLUMNS", "bucket_statistics", "reason_counts", "tokens_per_clip"]

STAT_COLUMNS = [
    "resolution",
    "num_frames",
    "aspect_ratio",
    "height",
    "width",
    "batch_size",
    "clips",
    "batches",
    "left_over_clips",
    "tokens_per_clip",
    "tokens_per_batch",
]


def tokens_per_clip(
    num_frames: int, height: int, width: int, vae_downsample: int = 8, patch_size: tuple[int, int, int] = (1, 2, 2)
) -> int:
    """Transformer tokens of one clip of ``num_frames x height x width`` pixels."""
    pt, ph, pw = patch_size
    return (
        math.ceil(num_frames / pt)
        * math.ceil((height // vae_downsample) / ph)
        * math.ceil((width // vae_downsample) / pw)
    )


def bucket_statistics(
    assigned: pd.DataFrame,
    *,
    vae_downsample: int = 8,
    patch_size: tuple[int, int, int] = (1, 2, 2),
    drop_last: bool = True,
    figure: bool = True,
) -> tuple[pd.DataFrame, Figure | None]:
    """Per bucket of an assigned clip table (:func:`~soraflow.buckets.assign.assign_buckets`):
    clips, batches (incomplete ones dropped when ``drop_last``), clips left over, tokens per
    clip and per batch; plus a matplotlib figure of the same (``None`` when ``figure=False``).

    Rows are ordered by resolution (visiting order: most pixels first), frames (most first)
    and aspect ratio. ``aspect_ratio`` is the table key as a float.
    """
    got = assigned[assigned["bucket_resolution"].notna()]
    rows = []
    if len(got):
        res = got["bucket_resolution"]
        if isinstance(res.dtype, pd.CategoricalDtype):
            rank = {name: i for i, name in enumerate(res.cat.categories)}
        else:
            rank = {name: i for i, name in enumerate(sorted(res.unique()))}
        keys = ["bucket_resolution", "bucket_num_frames", "bucket_aspect_ratio", "bucket_height", "bucket_width", "bucket_batch_size"]
        counts = got.groupby(keys, observed=True, dropna=False).size()
        for (r, t, ar, h, w, bs), n in counts.items():
            bs = int(bs)
            n = int(n)
            batches = n // bs if drop_last else -(-n // bs)
            left = n - (n // bs) * bs if drop_last else 0
            tok = tokens_per_clip(int(t), int(h), int(w), vae_downsample, patch_size)
            rows.append([str(r), int(t), float(ar), int(h), int(w), bs, n, batches, left, tok, tok * bs])
        rows.sort(key=lambda x: (rank[x[0]], -x[1], x[2]))
    table = pd.DataFrame(rows, columns=STAT_COLUMNS)
    fig = _figure(table) if figure else None
    return table, fig


def reason_counts(assigned: pd.DataFrame) -> pd.DataFrame:
    """How many clips got a bucket and how many sat out, by reason (with its explanation)."""
    reason = assigned["bucket_reason"].astype("object")
    n_ok = int(reason.isna().sum())
    rows = [{"reason": "assigned", "clips": n_ok, "meaning": "got a bucket this epoch"}]
    counts = reason.dropna().value_counts()
    for code, meaning in REASONS.items():
        rows.append({"reason": code, "clips": int(counts.get(code, 0)), "meaning": meaning})
    return pd.DataFrame(rows)


def _label(row: pd.Series) -> str:
    return f"{row.resolution} {row.num_frames}f {row.height}x{row.width}"


def _figure(table: pd.DataFrame) -> Figure:
    from matplotlib.figure import Figure  # lazy: keeps `import soraflow.buckets` light

    n = max(1, len(table))
    fig = Figure(figsize=(11, 1.2 + 0.28 * n), layout="constrained")
    ax_clips, ax_tokens = fig.subplots(1, 2, sharey=True)
    labels = [_label(r) for r in table.itertuples()] if len(table) else ["(no bucket)"]
    y = np.arange(len(labels))
    clips = table["clips"].to_numpy() if len(table) else np.zeros(1)
    batches = table["batches"].to_numpy() if len(table) else np.zeros(1)
    tokens = table["tokens_per_batch"].to_numpy() if len(table) else np.zeros(1)
    ax_clips.barh(y - 0.2, clips, height=0.4, label="clips")
    ax_clips.barh(y + 0.2, batches, height=0.4, label="batches")
    ax_clips.set_yticks(y, labels, fontsize=7)
    ax_clips.invert_yaxis()
    ax_clips.set_xlabel("count")
    ax_clips.legend(loc="lower right", fontsize=7)
    ax_clips.set_title("clips and batches per bucket")
    ax_tokens.barh(y, tokens, height=0.6, color="tab:green")
    ax_tokens.set_xlabel("tokens per batch")
    ax_tokens.set_title("tokens per batch (latent patches x batch size)")
    return fig
