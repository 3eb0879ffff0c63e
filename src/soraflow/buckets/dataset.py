"""Reading one clip at its bucket's size: the dataset transform of the batch sampler.

A clip of bucket ``(T, H, W)``: ``T * frame_interval`` consecutive source frames starting at a
seeded random frame, every ``frame_interval``-th of them kept (so ``T`` frames with stride
``frame_interval``), each resized so that it covers ``H x W`` (keeping its aspect ratio) and
centre-cropped to ``H x W`` (the original's ``resize_crop_to_fill``), then scaled to
``[-1, 1]``. The result is a float tensor ``[C, T, H, W]``. A still image gives ``T = 1``.

The start frame comes from the request's seed (a function of (seed, epoch, clip id)), so a
batch loads the same frames in any worker and in a resumed run.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from soraflow.buckets.sampler import ClipRequest

__all__ = [
    "IMAGE_EXTENSIONS",
    "VideoClipDataset",
    "frame_indices",
    "load_clip",
    "read_image",
    "read_video_frames",
    "resize_crop_to_fill",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def frame_indices(
    total: int, num_frames: int, frame_interval: int, rng: np.random.Generator, max_start: int | None = None
) -> np.ndarray:
    """Source frame numbers: a random start in ``[0, total - T * fi]``, then stride ``fi``.

    ``max_start`` caps the start (windows near the clip's beginning). A clip shorter than the
    window (metadata that over-counts frames) repeats its last frame.
    """
    if total <= 0:
        raise ValueError("the clip has no frames")
    span = num_frames * frame_interval
    last_start = max(0, total - span)
    if max_start is not None:
        last_start = min(last_start, int(max_start))
    start = int(rng.integers(0, last_start + 1))
    idx = start + np.arange(num_frames, dtype=np.int64) * frame_interval
    if idx[-1] >= total:
        logger.debug("clip of %d frames is shorter than %d x %d; repeating its last frame", total, num_frames, frame_interval)
    return np.minimum(idx, total - 1)


def read_video_frames(path: str | Path, indices: np.ndarray, start_frame: int = 0) -> np.ndarray:
    """Decode frames ``start_frame + indices`` (presentation order) as ``[T, h, w, 3]`` uint8.

    Decodes sequentially and stops after the last frame needed; a frame asked twice comes
    twice. Frames past the end of the file (metadata that over-counts) repeat the last
    frame the file has.
    """
    wanted = (np.asarray(indices, dtype=np.int64) + int(start_frame)).tolist()
    needed = set(wanted)
    last = max(wanted)
    got: dict[int, np.ndarray] = {}
    final = None  # the last frame decoded, stand-in for frames past the end
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            final = (i, frame)
            if i in needed:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
        if final is None:
            raise ValueError(f"{path}: no video frame could be decoded")
        end, frame = final
        if end not in got:
            got[end] = frame.to_ndarray(format="rgb24")
    return np.stack([got[i] if i in got else got[end] for i in wanted])


def read_image(path: str | Path) -> np.ndarray:
    """A still image as ``[1, h, w, 3]`` uint8 RGB."""
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))[None]


def resize_crop_to_fill(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize ``[T, C, h, w]`` frames (bilinear, antialiased) to cover ``height x width``, then
    centre-crop to exactly that size (the original's ``resize_crop_to_fill``)."""
    h, w = frames.shape[-2:]
    rh, rw = height / h, width / w
    if rh > rw:
        sh, sw = height, max(width, round(w * rh))
    else:
        sh, sw = max(height, round(h * rw)), width
    if (sh, sw) != (h, w):
        frames = F.interpolate(frames, size=(sh, sw), mode="bilinear", align_corners=False, antialias=True)
    i = (sh - height) // 2
    j = (sw - width) // 2
    return frames[..., i : i + height, j : j + width]


def load_clip(
    path: str | Path,
    num_frames: int,
    frame_interval: int,
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    start_frame: int = 0,
    clip_frames: int | None = None,
    max_window_start: int | None = None,
) -> torch.Tensor:
    """One clip as a float tensor ``[C, T, H, W]`` in ``[-1, 1]`` (see the module docstring).

    ``start_frame``/``clip_frames`` select a clip inside a longer file (frames
    ``[start_frame, start_frame + clip_frames)``); ``clip_frames`` defaults to the file's
    frame count. ``max_window_start`` caps the window's random start frame (see
    :func:`frame_indices`). Images (by extension) give ``T = 1`` and need ``num_frames == 1``.
    """
    path = Path(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        if num_frames != 1:
            raise ValueError(f"{path}: an image can only fill a 1-frame bucket, asked for {num_frames}")
        frames = read_image(path)
    else:
        total = clip_frames if clip_frames is not None else _count_frames(path) - int(start_frame)
        idx = frame_indices(int(total), int(num_frames), int(frame_interval), rng, max_window_start)
        frames = read_video_frames(path, idx, start_frame)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # [T, C, h, w]
    x = resize_crop_to_fill(x, int(height), int(width))
    x = (x / 127.5 - 1.0).clamp_(-1.0, 1.0)
    return x.permute(1, 0, 2, 3).contiguous()  # [C, T, H, W]


def _count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in container.decode(stream))


class VideoClipDataset(Dataset):
    """Clips of a table, loaded at the size a :class:`~soraflow.buckets.sampler.BucketSampler`
    batch asks for. Index it with a :class:`ClipRequest` (what the sampler yields).

    ``df`` is the sampler's table (same row order); ``df[path_column]`` is relative to
    ``root`` (or absolute). Optional columns: ``start_frame`` (clip inside a longer file,
    with ``num_frames`` its length), ``fps`` and ``text``. An item is a dict with ``video``
    ``[C, T, H, W]``, ``index``, ``num_frames``, ``height``, ``width``, ``aspect_ratio``,
    ``fps`` (source fps / frame_interval, NaN when unknown or an image) and ``text`` ("" if
    there is no text column).
    """

    def __init__(
        self,
        df: pd.DataFrame,
        root: str | Path,
        frame_interval: int,
        *,
        path_column: str = "path",
        text_column: str = "text",
    ):
        if path_column not in df.columns:
            raise ValueError(f"clip table lacks the {path_column!r} column (columns: {list(df.columns)})")
        self.df = df.reset_index(drop=True)
        self.root = Path(root)
        self.frame_interval = int(frame_interval)
        self.path_column = path_column
        self.text_column = text_column

    def __len__(self) -> int:
        return len(self.df)

    def __getitem__(self, request: ClipRequest | int) -> dict[str, Any]:
        if not isinstance(request, ClipRequest):
            request = self._request_from_row(int(request))
        row = self.df.iloc[request.index]
        path = Path(row[self.path_column])
        if not path.is_absolute():
            path = self.root / path
        start = int(row["start_frame"]) if "start_frame" in row.index and pd.notna(row["start_frame"]) else 0
        clip_frames = int(row["num_frames"]) if "num_frames" in row.index and pd.notna(row["num_frames"]) else None
        rng = np.random.default_rng(request.seed)
        video = load_clip(
            path, request.num_frames, self.frame_interval, request.height, request.width, rng,
            start_frame=start, clip_frames=clip_frames,
        )
        fps = float(row["fps"]) / self.frame_interval if "fps" in row.index and pd.notna(row["fps"]) and request.num_frames > 1 else math.nan
        text = row[self.text_column] if self.text_column in row.index and isinstance(row[self.text_column], str) else ""
        return {
            "video": video,
            "index": request.index,
            "num_frames": request.num_frames,
            "height": request.height,
            "width": request.width,
            "aspect_ratio": request.aspect_ratio,
            "fps": fps,
            "text": text,
        }

    def _request_from_row(self, index: int) -> ClipRequest:
        """An int index loads the row at its ``bucket_*`` columns (an assigned table)."""
        row = self.df.iloc[index]
        if "bucket_height" not in row.index or pd.isna(row["bucket_height"]):
            raise TypeError("index the dataset with a ClipRequest (from BucketSampler), or give it an assigned table")
        return ClipRequest(
            index, int(row["bucket_num_frames"]), int(row["bucket_height"]), int(row["bucket_width"]),
            float(row["bucket_aspect_ratio"]), index,
        )
