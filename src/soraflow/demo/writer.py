"""Write frames to disk: H.264 MP4 through PyAV (libx264, yuv420p), stills through Pillow.

The encoder runs single-threaded (parallelism comes from encoding several files at once), on
the x86-64 baseline asm (:mod:`soraflow.x264`), so that the bitstream, and the held-out split
that hashes it, depends neither on the machine's core count nor on the run. This module is what
the generator's worker processes import, so it stays free of pydantic and pyarrow.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from soraflow.avframes import yuv420p_from_rgb
from soraflow.demo.render import iter_media_frames
from soraflow.demo.spec import MediaSpec
from soraflow.x264 import libx264_options


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    width: int,
    height: int,
    fps: int,
    *,
    crf: int = 23,
    preset: str = "veryfast",
) -> int:
    """Encode ``[H, W, 3]`` uint8 RGB frames to an H.264 MP4; returns the number of frames."""
    if width % 2 or height % 2:
        raise ValueError(f"H.264 yuv420p needs even sizes, got {width}x{height}")
    path = Path(path)
    count = 0
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(
            "libx264",
            rate=Fraction(fps, 1),
            options=libx264_options(crf, preset, threads=1),
        )
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.thread_count = 1
        for frame in frames:
            if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                expected = f"({height}, {width}, 3) uint8"
                raise ValueError(f"frame {count} has shape {frame.shape} {frame.dtype}, expected {expected}")
            vf = yuv420p_from_rgb(frame)  # one-thread conversion: the same pixels in every process
            vf.pts = count
            vf.time_base = Fraction(1, fps)
            for packet in stream.encode(vf):
                container.mux(packet)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
    return count


def write_image(path: str | Path, frame: np.ndarray, *, jpeg_quality: int = 92) -> None:
    """Save one RGB frame as PNG or JPEG, chosen by the file extension."""
    path = Path(path)
    img = Image.fromarray(np.ascontiguousarray(frame))
    ext = path.suffix.lower()
    if ext == ".png":
        img.save(path, format="PNG", optimize=False)
    elif ext in (".jpg", ".jpeg"):
        img.save(path, format="JPEG", quality=jpeg_quality, subsampling=0)
    else:
        raise ValueError(f"unsupported image extension {ext!r} (use .png, .jpg or .jpeg)")


def write_media(media: MediaSpec, raw_dir: str, crf: int = 23, preset: str = "veryfast") -> tuple[str, int, int]:
    """Render and write one media file into ``raw_dir``; returns ``(name, frames, bytes)``.

    Top-level so that a process pool can pickle it.
    """
    path = Path(raw_dir) / media.name
    if media.kind == "video":
        frames = write_video(
            path, iter_media_frames(media), media.width, media.height, media.fps, crf=crf, preset=preset
        )
    else:
        write_image(path, next(iter_media_frames(media)))
        frames = 1
    if frames != media.num_frames:
        raise RuntimeError(f"{media.name}: wrote {frames} frames, planned {media.num_frames}")
    return media.name, frames, path.stat().st_size
