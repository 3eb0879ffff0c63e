"""Write generated videos: H.264 mp4 (PyAV), GIF (Pillow), and captioned grids of samples.

Demo samples are tiny (32x32), so by default files are scaled up with nearest-neighbour
(pixels stay sharp squares) until the shorter side is at least ``min_size``; ``min_size=0``
keeps the raw size. H.264 in yuv420p needs even sides: odd sides are padded by repeating
the last row/column.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["upscale_nearest", "video_grid", "write_gif", "write_mp4", "write_png"]


def _check_frames(frames: np.ndarray) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise ValueError(f"frames must be [T, H, W, 3] (or one [H, W, 3] image), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {arr.dtype}")
    return arr


def upscale_nearest(frames: np.ndarray, min_size: int) -> np.ndarray:
    """Repeat pixels by the smallest integer factor that makes the shorter side >= ``min_size``."""
    frames = _check_frames(frames)
    short = min(frames.shape[1], frames.shape[2])
    factor = max(1, math.ceil(min_size / short)) if min_size > 0 else 1
    if factor == 1:
        return frames
    return frames.repeat(factor, axis=1).repeat(factor, axis=2)


def _pad_even(frames: np.ndarray) -> np.ndarray:
    h, w = frames.shape[1:3]
    ph, pw = h % 2, w % 2
    if not (ph or pw):
        return frames
    return np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")


def write_mp4(
    frames: np.ndarray,
    path: str | Path,
    fps: float,
    *,
    min_size: int = 128,
    crf: int = 18,
    preset: str = "medium",
) -> Path:
    """Encode ``[T, H, W, 3]`` uint8 frames as H.264 (libx264, yuv420p) at ``fps``.

    ``min_size``: scale up (nearest neighbour) so the shorter side is at least this (0 = raw
    size). Odd sides are padded to even. Returns the path.
    """
    import av

    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    frames = _pad_even(upscale_nearest(frames, min_size))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width = int(frames.shape[2])
        stream.height = int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_gif(frames: np.ndarray, path: str | Path, fps: float, *, min_size: int = 128, loop: int = 0) -> Path:
    """Write an animated GIF (Pillow, adaptive palette per frame, ``loop=0`` loops forever)."""
    from PIL import Image

    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    frames = upscale_nearest(frames, min_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    duration = max(20, int(round(1000.0 / fps)))  # browsers clamp delays below 20 ms
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=duration, loop=loop, optimize=False, disposal=1
    )
    return path


def write_png(frame: np.ndarray, path: str | Path, *, min_size: int = 128) -> Path:
    """One frame (a text-to-image sample) as PNG."""
    from PIL import Image

    frames = upscale_nearest(frame, min_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frames[0]).save(path)
    return path


def _caption_lines(text: str, width_px: int, char_px: int = 6, max_lines: int = 3) -> list[str]:
    chars = max(4, width_px // char_px)
    lines = textwrap.wrap(text, chars) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, chars - 3)] + "..."
    return lines


def video_grid(
    videos: Sequence[np.ndarray],
    captions: Sequence[str] | None = None,
    *,
    columns: int = 4,
    tile_size: int = 128,
    pad: int = 4,
    background: tuple[int, int, int] = (255, 255, 255),
    text_color: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Tile several videos (``[T, H, W, 3]`` uint8 each) into one ``[T_max, H', W', 3]`` video.

    Each tile is scaled up (nearest neighbour) so its shorter side is at least ``tile_size``
    and captioned underneath (wrapped, at most 3 lines). Shorter videos hold their last frame.
    Write the result with :func:`write_gif` / :func:`write_mp4` (``min_size=0``).
    """
    from PIL import Image, ImageDraw, ImageFont

    if not videos:
        raise ValueError("video_grid needs at least one video")
    if captions is not None and len(captions) != len(videos):
        raise ValueError(f"{len(captions)} captions for {len(videos)} videos")
    tiles = [upscale_nearest(v, tile_size) for v in videos]
    th = max(t.shape[1] for t in tiles)
    tw = max(t.shape[2] for t in tiles)
    frames = max(t.shape[0] for t in tiles)
    font = ImageFont.load_default()
    line_h = 11
    lines = [_caption_lines(c, tw) for c in captions] if captions is not None else [[] for _ in tiles]
    text_h = (max(len(x) for x in lines) * line_h + pad) if captions is not None else 0
    cols = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    cell_h, cell_w = th + text_h + pad, tw + pad
    height, width = rows * cell_h + pad, cols * cell_w + pad
    canvas = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(canvas)
    for i, cap in enumerate(lines):
        r, c = divmod(i, cols)
        y0 = r * cell_h + pad + th + pad // 2
        for j, line in enumerate(cap):
            draw.text((c * cell_w + pad, y0 + j * line_h), line, fill=text_color, font=font)
    base = np.asarray(canvas).copy()
    out = np.repeat(base[None], frames, axis=0)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = r * cell_h + pad, c * cell_w + pad
        h, w = tile.shape[1:3]
        idx = np.minimum(np.arange(frames), tile.shape[0] - 1)
        out[:, y : y + h, x : x + w] = tile[idx]
    return out
