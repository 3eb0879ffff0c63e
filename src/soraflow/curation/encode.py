"""Write clip files with PyAV: H.264 (libx264, yuv420p, even sizes) at the source frame rate.

Timestamps are reset (the first frame has pts 0) and frames are written one per tick of
``1/fps``: a variable-frame-rate source becomes a constant-rate clip at its average rate, with
the same frames (none dropped or duplicated). Still images are written as PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from soraflow.curation.config import ClipsConfig
from soraflow.avframes import reformat
from soraflow.x264 import libx264_options


def rate_fraction(fps: float) -> Fraction:
    """A frame rate as a fraction FFmpeg likes (29.97 -> 30000/1001)."""
    if not math.isfinite(fps) or fps <= 0:
        return Fraction(25)
    return Fraction(fps).limit_denominator(1001)


def encode_clip(
    frames: Sequence[np.ndarray | av.VideoFrame], fps: float, path: str | Path, config: ClipsConfig
) -> None:
    """Encode frames (RGB uint8 arrays or decoded ``av.VideoFrame``s, all the same even size)
    to an H.264 mp4 at ``fps``. Decoded YUV 4:2:0 frames go to the encoder without conversion."""
    if not frames:
        raise ValueError("no frames to encode")
    first = frames[0]
    h, w = (first.height, first.width) if isinstance(first, av.VideoFrame) else first.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"frame size {w}x{h} is not even (yuv420p needs even sizes)")
    rate = rate_fraction(fps)
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(config.codec, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        # Frames are stamped in ticks of 1/rate; the muxer may change the *stream* time base
        # when it writes the header, so keep our own copy for the frames.
        tick = Fraction(1, 1) / rate
        stream.time_base = tick
        stream.options = libx264_options(config.crf, config.preset, config.threads)  # reproducible bytes
        for i, src in enumerate(frames):
            if not isinstance(src, av.VideoFrame):
                src = av.VideoFrame.from_ndarray(np.ascontiguousarray(src), format="rgb24")
            frame = reformat(src, format="yuv420p")
            frame.pts = i
            frame.time_base = tick
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_image(rgb: np.ndarray, path: str | Path, compress_level: int = 6) -> None:
    """Write a still image clip (PNG, lossless; ``compress_level`` 0-9 trades size for time)."""
    Image.fromarray(rgb).save(str(path), format="PNG", optimize=False, compress_level=compress_level)


def thumb_size(width: int, height: int, thumb_height: int = 72) -> tuple[int, int]:
    """``(w, h)`` of one tile of :func:`thumbnail_strip` for a ``width`` x ``height`` frame."""
    return max(1, min(4 * thumb_height, int(round(width * thumb_height / max(1, height))))), thumb_height


def thumbnail_strip(frames: Sequence[np.ndarray], height: int = 72) -> np.ndarray:
    """A few frames side by side at ``height`` px: the clip's picture in the sample grid.

    Frames already at their tile size (:func:`thumb_size`) are used as they are.
    """
    tiles = []
    for rgb in frames:
        h, w = rgb.shape[:2]
        size = thumb_size(w, h, height)
        if (w, h) != size:
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
        tiles.append(rgb)
        tiles.append(np.full((height, 2, 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], axis=1)
