"""Probe a media file with PyAV: what it is, before anything decodes all of it.

Any file FFmpeg can demux is accepted (videos in any container, still images through the
image demuxers). A file that cannot be opened, has no video stream or whose first frame does
not decode raises :class:`ProbeError` with a readable reason, which the caller quarantines.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import av

log = logging.getLogger(__name__)

#: FFmpeg demuxers that hold one still image (plus ``*_pipe`` image demuxers).
IMAGE_DEMUXERS = {"image2", "image2pipe", "webp_pipe", "png_pipe", "jpeg_pipe", "bmp_pipe", "tiff_pipe"}


class ProbeError(Exception):
    """The file is not usable media; ``str(err)`` is the reason shown in ``rejected.parquet``."""


@dataclass(frozen=True)
class ProbeInfo:
    """What the container headers (and the first decoded frame) say about a file.

    ``num_frames`` is the header's frame count, or the number of demuxed packets where the
    header has none; the decoder's own count replaces it after the full decode.
    ``rotation`` is the display-matrix rotation in degrees counter-clockwise (0, 90, 180, 270).
    """

    container: str
    codec: str
    kind: str  # "video" | "image"
    width: int
    height: int
    fps: float  # NaN for still images
    num_frames: int
    duration: float  # seconds; 0 for still images
    rotation: int
    frames_from_header: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _is_image_demuxer(name: str) -> bool:
    return any(part in IMAGE_DEMUXERS or part.endswith("_pipe") for part in name.split(","))


def _short_error(err: BaseException) -> str:
    msg = str(err).strip() or type(err).__name__
    # PyAV messages repeat the path: "[Errno 1094995529] Invalid data ...: '/path'"; keep the cause.
    if ": '" in msg:
        msg = msg.split(": '")[0]
    msg = re.sub(r"^\[Errno -?\d+\]\s*", "", msg)
    return msg[:200]


def probe_media(path: str | Path) -> ProbeInfo:
    """Open ``path`` and read its format; raise :class:`ProbeError` if it is not usable media."""
    path = Path(path)
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise ProbeError(f"cannot read file: {err.strerror or err}") from None
    if size == 0:
        raise ProbeError("empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except Exception as err:  # PyAV raises many error types for garbage input
        raise ProbeError(f"not a readable media file: {_short_error(err)}") from None
    try:
        return _probe_open(container)
    finally:
        container.close()


def _probe_open(container) -> ProbeInfo:
    if not container.streams.video:
        raise ProbeError("no video stream (audio-only or data file)")
    stream = container.streams.video[0]
    cc = stream.codec_context
    width, height = int(cc.width or 0), int(cc.height or 0)
    codec = cc.name or "unknown"
    fmt = container.format.name
    kind = "image" if _is_image_demuxer(fmt) else "video"
    # The first frame must decode; it also carries the display-matrix rotation. One decoder
    # thread: a thread pool started for one frame costs more than it saves.
    stream.codec_context.thread_count = 1
    first = None
    try:
        for frame in container.decode(stream):
            first = frame
            break
    except Exception as err:
        raise ProbeError(f"cannot decode the first frame ({codec}): {_short_error(err)}") from None
    if first is None:
        raise ProbeError(f"no decodable frame ({codec})")
    width, height = width or first.width, height or first.height
    if width <= 0 or height <= 0:
        raise ProbeError(f"invalid frame size {width}x{height}")
    rotation = int(round(first.rotation / 90.0)) * 90 % 360 if first.rotation else 0
    if kind == "image":
        return ProbeInfo(fmt, codec, kind, width, height, math.nan, 1, 0.0, rotation, True)

    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else math.nan
    header_frames = int(stream.frames or 0)
    duration = math.nan
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    from_header = header_frames > 0
    num_frames = header_frames
    if not from_header:
        num_frames = _count_packets(container, stream)
    if not math.isfinite(fps) or fps <= 0:
        fps = num_frames / duration if duration and math.isfinite(duration) and duration > 0 else math.nan
    if not math.isfinite(fps) or fps <= 0:
        raise ProbeError(f"cannot determine the frame rate ({codec})")
    if not math.isfinite(duration) or duration <= 0:
        duration = num_frames / fps
    return ProbeInfo(fmt, codec, kind, width, height, fps, num_frames, duration, rotation, from_header)


def _count_packets(container, stream) -> int:
    """Frame count without decoding: demux and count the video packets (headers without counts)."""
    try:
        container.seek(0)
    except Exception:  # unseekable: the first frame was already read
        pass
    n = 0
    try:
        for packet in container.demux(stream):
            if packet.size:
                n += 1
    except Exception as err:
        log.debug("packet count stopped early: %s", err)
    return n
