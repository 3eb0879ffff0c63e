"""Bucket assignment: the original's rule, vectorised over a whole clip table.

For one clip of ``T`` frames and ``H x W`` pixels (Open-Sora 1.1 ``Bucket.get_bucket_id``):

1. visit the configured resolutions from most pixels to fewest (ties in config order) and skip
   one whose pixel count x 0.8 exceeds ``H * W``;
2. an image (``T == 1``) can only take frame bucket ``1``; a video takes the largest frame
   bucket ``t != 1`` with ``T > t * frame_interval`` (strict); with none, go on to the next
   resolution;
3. keep the clip there with the bucket's keep probability (1 always keeps, 0 never: a
   disabled bucket still captures the clip and passes it on); on failure go on to the
   **next lower resolution**, not to a shorter ``t``;
4. if no resolution keeps it, the clip sits out this epoch;
5. the aspect ratio is the table key closest to ``H / W`` (first key in table order on a tie).

The draws are :func:`soraflow.buckets.draws.uniform` of ``(seed, epoch, clip id, bucket
index)``, where the bucket index counts (resolution, frames) pairs in visiting order (frames
from most to fewest), as the original's ``bucket_id``. The loop runs over resolutions and
frame buckets (a few dozen), never over clips.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from soraflow.buckets.config import BucketsConfig
from soraflow.buckets.draws import PURPOSE_KEEP, clip_keys, uniform
from soraflow.buckets.tables import ResolutionTable

__all__ = [
    "BUCKET_COLUMNS",
    "REASONS",
    "Bucket",
    "BucketPlan",
    "assign_buckets",
    "closest_ratio_index",
]

#: Columns added by :func:`assign_buckets`.
BUCKET_COLUMNS = (
    "bucket_resolution",
    "bucket_num_frames",
    "bucket_aspect_ratio",
    "bucket_height",
    "bucket_width",
    "bucket_batch_size",
    "bucket_reason",
)

#: Why a clip sits out an epoch (``bucket_reason``; empty for a clip that got a bucket).
REASONS = {
    "too_small": "H*W is below 0.8 x the pixel count of every configured resolution",
    "too_short": "large enough somewhere, but no frame bucket t with T > t * frame_interval there",
    "no_bucket": "large enough somewhere, but no bucket of its kind there (an image needs frame bucket 1; a video one t != 1)",
    "dropped_by_keep_prob": "had candidate buckets, but every keep-probability draw failed (keep_prob 0 always fails)",
    "invalid_metadata": "num_frames, height or width missing or not positive",
}
_REASON_CODES = list(REASONS)

PIXEL_TOLERANCE = 0.8


@dataclass(frozen=True)
class Bucket:
    """One (resolution, frames) bucket of a config; aspect ratios come from its table."""

    resolution: str
    num_frames: int
    keep_prob: float
    batch_size: int | None
    index: int  # the original's bucket_id: position in visiting order


@dataclass(frozen=True)
class BucketPlan:
    """A config compiled for assignment: resolutions in visiting order and their buckets."""

    resolutions: tuple[str, ...]
    tables: dict[str, ResolutionTable]
    frames: dict[str, tuple[int, ...]]  # per resolution, most frames first
    buckets: dict[tuple[str, int], Bucket] = field(repr=False)
    frame_interval: int

    @classmethod
    def from_config(cls, config: BucketsConfig) -> BucketPlan:
        all_tables = config.tables()
        # sorted() is stable: resolutions with the same pixel count keep the config's order.
        names = tuple(sorted(config.bucket_config, key=lambda n: all_tables[n].pixels, reverse=True))
        frames: dict[str, tuple[int, ...]] = {}
        buckets: dict[tuple[str, int], Bucket] = {}
        index = 0
        for name in names:
            ts = tuple(sorted(config.bucket_config[name], reverse=True))
            frames[name] = ts
            for t in ts:
                prob, bs = config.bucket_config[name][t]
                buckets[(name, t)] = Bucket(name, t, prob, bs, index)
                index += 1
        return cls(
            resolutions=names,
            tables={n: all_tables[n] for n in names},
            frames=frames,
            buckets=buckets,
            frame_interval=config.frame_interval,
        )

    @property
    def num_buckets(self) -> int:
        """(resolution, frames, aspect ratio) triples, as the original's ``num_bucket``."""
        return sum(len(self.tables[r].ratios) * len(self.frames[r]) for r in self.resolutions)


def closest_ratio_index(table: ResolutionTable, height: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Index (in table order) of the key closest to ``height / width``, vectorised.

    The same float64 arithmetic as the original's ``min(keys, key=abs(float(k) - H / W))``:
    the nearest key is one of the two neighbours of ``H / W`` in sorted order; a tie goes to
    the key that comes first in the table.
    """
    values, _, _ = table.arrays()
    order = np.argsort(values, kind="stable")
    sorted_vals = values[order]
    ratio = np.asarray(height, dtype=np.float64) / np.asarray(width, dtype=np.float64)
    k = len(sorted_vals)
    pos = np.searchsorted(sorted_vals, ratio, side="left")
    left = np.clip(pos - 1, 0, k - 1)
    right = np.clip(pos, 0, k - 1)
    dl = np.abs(sorted_vals[left] - ratio)
    dr = np.abs(sorted_vals[right] - ratio)
    take_right = (dr < dl) | ((dr == dl) & (order[right] < order[left]))
    return np.where(take_right, order[right], order[left])


def _metadata_arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    missing = [c for c in ("num_frames", "height", "width") if c not in df.columns]
    if missing:
        raise ValueError(
            f"clip table lacks column(s) {missing}; bucketing needs num_frames, height and width "
            f"(columns present: {list(df.columns)})"
        )
    t = pd.to_numeric(df["num_frames"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    h = pd.to_numeric(df["height"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    w = pd.to_numeric(df["width"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(t) & np.isfinite(h) & np.isfinite(w) & (t > 0) & (h > 0) & (w > 0)
    return t, h, w, valid


def assign_buckets(
    df: pd.DataFrame,
    config: BucketsConfig,
    seed: int | None = None,
    epoch: int = 0,
    *,
    id_column: str = "id",
) -> pd.DataFrame:
    """A copy of ``df`` with the bucket of every clip for ``epoch`` (and why, for clips left out).

    ``df`` needs ``num_frames``, ``height`` and ``width``; other columns are kept. The clip id
    is ``df[id_column]`` when present, else the row position. ``seed`` defaults to
    ``config.seed``. Added columns (:data:`BUCKET_COLUMNS`):

    - ``bucket_resolution`` (categorical, resolution name), ``bucket_num_frames``,
      ``bucket_height``, ``bucket_width``, ``bucket_batch_size`` (nullable ``Int64``);
    - ``bucket_aspect_ratio``: the table's ``H/W`` key as a **float** (``"0.56"`` -> 0.56);
    - ``bucket_reason`` (categorical): empty (``NaN``) for a clip with a bucket, else one of
      :data:`REASONS`.
    """
    plan = BucketPlan.from_config(config)
    seed = config.seed if seed is None else int(seed)
    t, h, w, valid = _metadata_arrays(df)
    keys = clip_keys(df, id_column)
    n = len(df)
    fi = plan.frame_interval
    hw = h * w
    is_image = t == 1

    res_code = np.full(n, -1, dtype=np.int64)  # index into plan.resolutions
    t_out = np.zeros(n, dtype=np.int64)
    active = valid.copy()
    any_pixel_ok = np.zeros(n, dtype=bool)
    any_candidate = np.zeros(n, dtype=bool)
    any_video_frames = np.zeros(n, dtype=bool)  # some pixel-ok resolution has a video bucket

    with np.errstate(invalid="ignore"):
        for r, name in enumerate(plan.resolutions):
            pixels = plan.tables[name].pixels
            pix_ok = valid & ~(hw < pixels * PIXEL_TOLERANCE)
            any_pixel_ok |= pix_ok
            frames = plan.frames[name]
            video_frames = [f for f in frames if f != 1]
            if video_frames:
                any_video_frames |= pix_ok & ~is_image
            # Frame bucket per clip at this resolution (0 = none): images -> 1, videos -> the
            # largest t != 1 with T > t * fi (frames are sorted from most to fewest).
            choice = np.zeros(n, dtype=np.int64)
            if 1 in frames:
                choice[is_image] = 1
            for f in reversed(video_frames):  # fewest first, so larger t overwrite
                choice[~is_image & (t > f * fi)] = f
            candidate = active & pix_ok & (choice > 0)
            any_candidate |= candidate
            for f in frames:
                bucket = plan.buckets[(name, f)]
                sel = np.flatnonzero(candidate & (choice == f))
                if sel.size == 0:
                    continue
                if bucket.keep_prob >= 1.0:
                    kept = sel
                elif bucket.keep_prob <= 0.0:
                    continue
                else:
                    u = uniform(PURPOSE_KEEP, seed, epoch, keys[sel], bucket.index)
                    kept = sel[u < bucket.keep_prob]
                res_code[kept] = r
                t_out[kept] = f
                active[kept] = False

    assigned = res_code >= 0
    ar = np.full(n, np.nan)
    bh = np.zeros(n, dtype=np.int64)
    bw = np.zeros(n, dtype=np.int64)
    bs = np.zeros(n, dtype=np.int64)
    bs_ok = np.zeros(n, dtype=bool)
    for r, name in enumerate(plan.resolutions):
        sel = np.flatnonzero(res_code == r)
        if sel.size == 0:
            continue
        table = plan.tables[name]
        values, hs, ws = table.arrays()
        idx = closest_ratio_index(table, h[sel], w[sel])
        ar[sel] = values[idx]
        bh[sel] = hs[idx]
        bw[sel] = ws[idx]
        for f in plan.frames[name]:
            size = plan.buckets[(name, f)].batch_size
            if size is not None:
                m = sel[t_out[sel] == f]
                bs[m] = size
                bs_ok[m] = True

    reason = np.full(n, -1, dtype=np.int64)
    left_out = ~assigned
    reason[left_out & ~valid] = _REASON_CODES.index("invalid_metadata")
    lv = left_out & valid
    reason[lv & ~any_pixel_ok] = _REASON_CODES.index("too_small")
    reason[lv & any_pixel_ok & any_candidate] = _REASON_CODES.index("dropped_by_keep_prob")
    rest = lv & any_pixel_ok & ~any_candidate
    reason[rest & ~is_image & any_video_frames] = _REASON_CODES.index("too_short")
    reason[rest & (is_image | ~any_video_frames)] = _REASON_CODES.index("no_bucket")

    out = df.copy()
    out["bucket_resolution"] = pd.Categorical.from_codes(res_code, categories=list(plan.resolutions))
    out["bucket_num_frames"] = _nullable(t_out, assigned)
    out["bucket_aspect_ratio"] = ar
    out["bucket_height"] = _nullable(bh, assigned)
    out["bucket_width"] = _nullable(bw, assigned)
    out["bucket_batch_size"] = _nullable(bs, bs_ok)
    out["bucket_reason"] = pd.Categorical.from_codes(reason, categories=_REASON_CODES)
    return out


def _nullable(values: np.ndarray, mask: np.ndarray) -> pd.arrays.IntegerArray:
    return pd.arrays.IntegerArray(values.astype(np.int64), ~mask)
