"""One decode pass over a source: decoded frames at the clip size, plus a small frame for the detector.

Frames stay in the decoder's own pixel format (YUV for videos): nothing is converted to RGB
unless a scorer or a thumbnail needs it, and the encoder takes YUV 4:2:0 directly, so a clip
that needs no resizing goes from decoder to encoder without a colour conversion. Frames are
resized (libswscale) only when the source is larger than the clip size or has odd sizes.
The detector gets a subsampled frame built from the planes (every k-th pixel, as
PySceneDetect's own ``downscale`` did), converted to BGR at that small size.

Every colour conversion and resize goes through :func:`soraflow.avframes.reformat` (a reused
one-thread swscale context; see there why).

Rotation from the display matrix is applied to everything that leaves this module (RGB
frames, detector frames, encoded clips), so clips are upright. A decode error part-way
(truncated or corrupt data) ends the pass; the frames before it are kept and
:attr:`FrameReader.error` says why it stopped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from soraflow.avframes import reformat, to_rgb

log = logging.getLogger(__name__)

_YUV420 = {"yuv420p", "yuvj420p"}


def even_size(width: int, height: int, max_short_side: int) -> tuple[int, int]:
    """``(w, h)`` with the shorter side capped at ``max_short_side``, aspect kept, both even (>= 2).

    Odd sizes round down (never upscale): 17x17 -> 16x16.
    """
    scale = min(1.0, max_short_side / max(1, min(width, height)))
    w = max(2, int(width * scale / 2.0 + 1e-6) * 2)
    h = max(2, int(height * scale / 2.0 + 1e-6) * 2)
    return w, h


def upright(arr: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise; np.rot90 turns the same way)."""
    if rotation % 360 == 0:
        return arr
    return np.ascontiguousarray(np.rot90(arr, k=(rotation % 360) // 90))


@dataclass
class DecodedFrame:
    """One decoded frame: ``frame`` at the clip size (unrotated, decoder pixel format)."""

    index: int
    frame: av.VideoFrame
    rotation: int
    small: np.ndarray | None = None  # BGR, detector size, upright
    pts_seconds: float | None = None

    def rgb(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB, upright.

        With ``size`` (upright ``(w, h)``) the frame is also scaled to it (area average) in the
        same swscale call as the colour conversion: a thumbnail tile costs a fraction of a
        full-size conversion.
        """
        if size is None:
            return upright(to_rgb(self.frame), self.rotation)
        w, h = (size[1], size[0]) if self.rotation in (90, 270) else size
        small = reformat(self.frame, width=w, height=h, format="rgb24", interpolation="AREA")
        return upright(small.to_ndarray(), self.rotation)


def _plane(frame: av.VideoFrame, i: int, h: int, w: int) -> np.ndarray:
    p = frame.planes[i]
    return np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:h, :w]


def detector_frame(frame: av.VideoFrame, step: int) -> np.ndarray:
    """BGR frame subsampled every ``step`` pixels (YUV planes read directly when 4:2:0)."""
    w, h = frame.width, frame.height
    if frame.format.name in _YUV420:
        y = _plane(frame, 0, h, w)[::step, ::step]
        cw, ch = (w + 1) // 2, (h + 1) // 2
        u = _plane(frame, 1, ch, cw)
        v = _plane(frame, 2, ch, cw)
        if step % 2 == 0:
            u, v = u[:: step // 2, :: step // 2], v[:: step // 2, :: step // 2]
        size = (y.shape[1], y.shape[0])
        if u.shape != y.shape:
            u = cv2.resize(np.ascontiguousarray(u), size, interpolation=cv2.INTER_NEAREST)
            v = cv2.resize(np.ascontiguousarray(v), size, interpolation=cv2.INTER_NEAREST)
        yuv = np.dstack([y, u, v])
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR)
    bgr = reformat(frame, format="bgr24").to_ndarray()
    return np.ascontiguousarray(bgr[::step, ::step])


def detect_step(width: int, detect_width: int) -> int:
    """Subsampling step so the detector sees about ``detect_width`` pixels across (>= 1)."""
    if detect_width <= 0 or width <= detect_width:
        return 1
    return max(1, math.ceil(width / detect_width))


class FrameReader:
    """Iterate the frames of a file once: ``for f in FrameReader(...): ...``.

    ``out_size`` is ``(w, h)`` of the *displayed* (rotated) clip; ``detect_width`` the width the
    detector sees (``None``: no detector frames).
    """

    def __init__(
        self,
        path: str | Path,
        out_size: tuple[int, int],
        detect_width: int | None,
        rotation: int = 0,
        threads: bool = True,
    ):
        self.path = str(path)
        self.rotation = rotation % 360
        # Frames are kept unrotated: a 90/270 degree rotation swaps width and height.
        self.raw_size = (out_size[1], out_size[0]) if self.rotation in (90, 270) else out_size
        self.detect_width = detect_width
        self.threads = threads
        self.error: str | None = None
        self.count = 0

    def __iter__(self) -> Iterator[DecodedFrame]:
        w, h = self.raw_size
        step = None
        if self.detect_width is not None:
            shown_w = h if self.rotation in (90, 270) else w
            step = detect_step(shown_w, self.detect_width)
        try:
            container = av.open(self.path, metadata_errors="ignore")
        except Exception as err:
            self.error = f"cannot open: {err}"
            return
        try:
            stream = container.streams.video[0]
            if self.threads:
                stream.thread_type = "AUTO"
            frames = container.decode(stream)
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except Exception as err:  # truncated/corrupt data: keep what decoded
                    self.error = f"decoding stopped after frame {self.count}: {str(err)[:160]}"
                    log.warning("%s: %s", self.path, self.error)
                    break
                if (frame.width, frame.height) != (w, h):
                    fmt = frame.format.name if frame.format.name in _YUV420 or frame.format.name == "rgb24" else "yuv420p"
                    # Bilinear (area-weighted when shrinking) costs ~2/3 of swscale's bicubic default.
                    frame = reformat(frame, width=w, height=h, format=fmt, interpolation="BILINEAR")
                small = upright(detector_frame(frame, step), self.rotation) if step is not None else None
                t = float(frame.time) if frame.time is not None else None
                yield DecodedFrame(self.count, frame, self.rotation, small, t)
                self.count += 1
        finally:
            container.close()


def decode_only(path: str | Path, rgb: bool = True, reuse_converter: bool = False) -> int:
    """Decode every frame (to RGB numpy arrays when ``rgb``) and count them: the benchmark's
    baseline for "how long does just reading this file take".

    ``to_ndarray(format="rgb24")`` per frame (the usual idiom) unless ``reuse_converter``:
    then the same pixels through :func:`to_rgb`'s reused one-thread context, which costs a
    fraction of the idiom's wall time on PyAV >= 17 (see the module docstring).
    """
    n = 0
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if rgb and reuse_converter:
                to_rgb(frame)
            elif rgb:
                frame.to_ndarray(format="rgb24")
            n += 1
    return n
