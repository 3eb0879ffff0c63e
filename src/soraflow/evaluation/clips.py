"""Real clips at the evaluation size: decode once, then cut windows in memory.

A clip file is decoded once and every frame is resized to cover the evaluation size and
centre-cropped (the training transform, :func:`soraflow.buckets.dataset.resize_crop_to_fill`),
kept as uint8 ``[N, H, W, 3]``. Windows of ``T`` frames with stride ``frame_interval`` (what
the model was trained on) are then cut without decoding again; a clip too short for that
stride gets the largest stride that fits (at least 1), and one shorter than ``T`` frames
repeats its last frame (as the training loader does).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from soraflow.buckets.dataset import IMAGE_EXTENSIONS, read_image, resize_crop_to_fill
from soraflow.prefetch import ordered_map

__all__ = ["decode_clip", "fixed_windows", "load_clips", "random_window", "resize_frames", "window_indices"]

log = logging.getLogger(__name__)


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[N, h, w, 3]`` uint8 -> ``[N, height, width, 3]`` uint8 (resize to cover, centre crop)."""
    if frames.shape[1:3] == (height, width):
        return frames
    out = []
    for i in range(0, len(frames), 64):
        x = torch.from_numpy(np.ascontiguousarray(frames[i : i + 64])).permute(0, 3, 1, 2).float()
        x = resize_crop_to_fill(x, int(height), int(width))
        out.append(x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def decode_clip(path: str | Path, height: int, width: int, max_frames: int = 512) -> np.ndarray:
    """Every frame (at most ``max_frames``) of a clip or still image at ``height x width``."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return resize_frames(read_image(path), height, width)
    import av

    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path}: no frame could be decoded")
    return resize_frames(np.stack(frames), height, width)


def load_clips(
    clips: pd.DataFrame, height: int, width: int, *, root: str | Path = ".", max_frames: int = 512, progress: bool = True,
    desc: str = "decode clips", workers: int = 2,
) -> list[np.ndarray]:
    """:func:`decode_clip` for every row of a clip table (``path`` relative to ``root`` or absolute),
    in table order, ``workers`` clips at a time in threads (PyAV and torch release the GIL)."""

    def decode(p: str) -> np.ndarray:
        path = Path(p)
        return decode_clip(path if path.is_absolute() else Path(root) / path, height, width, max_frames)

    paths = clips["path"].astype(str).tolist()
    decoded = ordered_map(decode, paths, workers)
    return list(tqdm(decoded, total=len(paths), desc=desc, disable=not progress, mininterval=1.0))


def _stride(n: int, num_frames: int, frame_interval: int) -> int:
    if num_frames <= 1:
        return 1
    return max(1, min(frame_interval, (n - 1) // (num_frames - 1)))


def window_indices(n: int, num_frames: int, frame_interval: int, start: int) -> np.ndarray:
    """Frame numbers of the window starting at ``start`` (see the module docstring)."""
    stride = _stride(n, num_frames, frame_interval)
    idx = start + np.arange(num_frames) * stride
    return np.minimum(idx, n - 1)


def _max_start(n: int, num_frames: int, frame_interval: int) -> int:
    span = (num_frames - 1) * _stride(n, num_frames, frame_interval) + 1
    return max(0, n - span)


def random_window(frames: np.ndarray, num_frames: int, frame_interval: int, rng: np.random.Generator) -> np.ndarray:
    """A window ``[T, H, W, 3]`` at a uniformly drawn start."""
    n = len(frames)
    start = int(rng.integers(0, _max_start(n, num_frames, frame_interval) + 1))
    return frames[window_indices(n, num_frames, frame_interval, start)]


def fixed_windows(frames: np.ndarray, num_frames: int, frame_interval: int, count: int) -> np.ndarray:
    """``count`` windows ``[count, T, H, W, 3]`` at evenly spaced starts (deterministic)."""
    n = len(frames)
    last = _max_start(n, num_frames, frame_interval)
    starts = np.linspace(0, last, count).round().astype(int) if count > 1 else np.array([last // 2])
    return np.stack([frames[window_indices(n, num_frames, frame_interval, int(s))] for s in starts])
