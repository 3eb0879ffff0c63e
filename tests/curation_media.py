"""Small media files for the curation tests, written with PyAV (good, odd and broken ones)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

COLORS = [(220, 40, 40), (40, 200, 60), (40, 80, 220), (230, 200, 40), (200, 60, 200)]
BACKGROUNDS = [(90, 90, 90), (20, 60, 110), (120, 90, 40), (30, 110, 100), (150, 150, 170)]


def scene_frames(n: int, width: int, height: int, scene: int, moving: bool = True) -> list[np.ndarray]:
    """A square on a plain background (colours differ per scene), moving right when ``moving``."""
    frames = []
    size = max(2, min(width, height) // 4)
    bg, fg = BACKGROUNDS[scene % len(BACKGROUNDS)], COLORS[scene % len(COLORS)]
    for t in range(n):
        f = np.empty((height, width, 3), np.uint8)
        f[:] = bg
        x = (width // 8 + (t * max(1, width // 40) if moving else 0)) % max(1, width - size)
        y = (height - size) // 2
        f[y : y + size, x : x + size] = fg
        frames.append(f)
    return frames


def write_video(
    path: Path,
    frames: Sequence[np.ndarray],
    fps: int = 24,
    pts_ms: Sequence[int] | None = None,
    rotation: int | None = None,
    faststart: bool = False,
) -> Path:
    """H.264 mp4; ``pts_ms`` gives explicit timestamps (variable frame rate)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast"}
        if rotation is not None:
            s.set_display_rotation(rotation)
        tb = Fraction(1, 1000) if pts_ms is not None else Fraction(1, fps)
        s.time_base = tb
        s.codec_context.time_base = tb
        for i, rgb in enumerate(frames):
            fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            fr.pts = int(pts_ms[i]) if pts_ms is not None else i
            fr.time_base = tb
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def cut_video(path: Path, scene_lengths: Sequence[int], width: int = 128, height: int = 96, fps: int = 24,
              moving: Sequence[bool] | None = None, sidecar: bool = True) -> list[int]:
    """A video of hard-cut scenes (and its caption sidecar); returns the true cut frames."""
    frames, cuts, start, scenes = [], [], 0, []
    for i, n in enumerate(scene_lengths):
        frames += scene_frames(n, width, height, i, moving=True if moving is None else moving[i])
        if i:
            cuts.append(start)
        scenes.append({"start_frame": start, "end_frame": start + n, "caption": f"scene {i} of {path.name}"})
        start += n
    write_video(path, frames, fps)
    if sidecar:
        path.with_name(path.name + ".json").write_text(json.dumps({"scenes": scenes}))
    return cuts


def write_png(path: Path, width: int = 96, height: int = 80) -> Path:
    img = scene_frames(1, width, height, 2, moving=False)[0]
    Image.fromarray(img).save(path, format="PNG")
    return path
