"""Pixels of a scene: background (plain, gradient, texture), camera pan, object, text.

Everything is a pure function of ``(spec, width, height, frame index)``: the background is a
function of *world* coordinates and the camera pan only shifts the window, so frame ``t`` is
the same whatever the scene length. Objects wrap around the frame (leave one side, come back
on the other) so a long scene keeps moving in the same direction.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from soraflow.demo import vocab
from soraflow.demo.spec import MediaSpec, SceneSpec

#: Texture tones stay inside this part of the dark..light range, so a pan changes pixels
#: much less than a cut does.
_TEXTURE_LOW, _TEXTURE_HIGH = 0.25, 0.75
TEXT_FILL = (255, 255, 255)
TEXT_STROKE = (0, 0, 0)
_FONT_FILE = "DejaVuSans-Bold.ttf"
_SUPERSAMPLE = 4


# ----------------------------------------------------------------------------- geometry


def object_pixel_size(spec: SceneSpec, width: int, height: int) -> int:
    """Side of the object's bounding box in pixels (a fraction of the shorter side)."""
    return max(4, int(round(spec.object_size * min(width, height))))


def object_center(spec: SceneSpec, width: int, height: int, t: int) -> tuple[float, float]:
    """Centre ``(x, y)`` of the object in frame ``t`` (pixels, wrapped into the frame)."""
    x = spec.start_x * width
    y = spec.start_y * height
    d = spec.moving_direction
    if d == "none":
        return x, y
    horizontal = d in ("left", "right")
    sign = 1 if d in ("right", "down") else -1
    extent = width if horizontal else height
    pos = x if horizontal else y
    if spec.enter_from_edge:  # touching the border it moves away from
        half = object_pixel_size(spec, width, height) / 2
        pos = half if sign > 0 else extent - half
    pos = (pos + sign * spec.speed * extent * t) % extent
    return (pos, y) if horizontal else (x, pos)


def pan_offset(spec: SceneSpec, width: int, t: int) -> int:
    """World x of the frame's left column at frame ``t`` (0 at frame 0)."""
    if spec.camera_pan == "none":
        return 0
    step = int(round(spec.pan_speed * width * t))
    return step if spec.camera_pan == "right" else -step


def text_font_size(spec: SceneSpec, width: int, height: int) -> int:
    short = min(width, height)
    return max(12, int(round(short * (0.14 if spec.text_style == "title" else 0.085))))


# ----------------------------------------------------------------------------- backgrounds


def _tone_ramp(background_color: str) -> tuple[np.ndarray, np.ndarray]:
    dark, _, light = vocab.background_tones(background_color)
    return np.asarray(dark, np.float32), np.asarray(light, np.float32)


def _hash_unit(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) per integer lattice point (splitmix64)."""
    with np.errstate(over="ignore"):
        h = ix.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= iy.astype(np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        h ^= np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x165667B19E3779F9)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)


def _value_noise(xs: np.ndarray, ys: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Smooth value noise on a lattice of ``cell`` pixels, evaluated at world coordinates."""
    fx, fy = xs / cell, ys / cell
    x0, y0 = np.floor(fx), np.floor(fy)
    tx, ty = fx - x0, fy - y0
    tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
    x0i, y0i = x0.astype(np.int64), y0.astype(np.int64)
    v00 = _hash_unit(x0i, y0i, seed)
    v10 = _hash_unit(x0i + 1, y0i, seed)
    v01 = _hash_unit(x0i, y0i + 1, seed)
    v11 = _hash_unit(x0i + 1, y0i + 1, seed)
    top = v00 + (v10 - v00) * tx
    bottom = v01 + (v11 - v01) * tx
    return top + (bottom - top) * ty


def background_field(spec: SceneSpec, width: int, height: int, x_start: int, x_stop: int) -> np.ndarray:
    """Background over world columns ``[x_start, x_stop)``: ``[H, x_stop - x_start, 3]`` uint8."""
    n = x_stop - x_start
    if spec.background == "plain":
        base = np.asarray(vocab.BACKGROUND_COLORS[spec.background_color], np.uint8)
        return np.broadcast_to(base, (height, n, 3)).copy()
    xs = np.arange(x_start, x_stop, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    short = min(width, height)
    if spec.background == "gradient":
        a = math.radians(spec.gradient_angle)
        ca, sa = math.cos(a), math.sin(a)
        extent = abs(width * ca) + abs(height * sa)
        proj_min = min(0.0, width * ca) + min(0.0, height * sa)
        u = (xs * ca + ys * sa - proj_min) / extent
        v = 0.5 - 0.5 * np.cos(np.pi * u)
    elif spec.texture == "checker":
        cell = max(4.0, short / 4.0)
        parity = (np.floor(xs / cell) + np.floor(ys / cell)) % 2
        v = _TEXTURE_LOW + (_TEXTURE_HIGH - _TEXTURE_LOW) * parity
    elif spec.texture == "stripes":
        period = max(8.0, short / 3.0)
        v = 0.5 + 0.5 * np.sin(2 * np.pi * (xs + ys) / period)
        v = _TEXTURE_LOW + (_TEXTURE_HIGH - _TEXTURE_LOW) * v
    else:  # noise
        gx, gy = np.broadcast_arrays(xs, ys)
        n1 = _value_noise(gx, gy, max(6.0, short / 3.0), spec.texture_seed)
        n2 = _value_noise(gx, gy, max(3.0, short / 8.0), spec.texture_seed + 1)
        v = _TEXTURE_LOW + (_TEXTURE_HIGH - _TEXTURE_LOW) * (0.65 * n1 + 0.35 * n2)
    v = np.broadcast_to(v, (height, n)).astype(np.float32)
    dark, light = _tone_ramp(spec.background_color)
    img = dark + v[..., None] * (light - dark)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- object


@functools.lru_cache(maxsize=64)
def shape_alpha(shape: str, size: int) -> np.ndarray:
    """Anti-aliased coverage ``[size, size]`` float32 in [0, 1] of the shape in its box."""
    big = size * _SUPERSAMPLE
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse((0, 0, big - 1, big - 1), fill=255)
    elif shape == "square":
        m = int(round(big * 0.07))
        draw.rectangle((m, m, big - 1 - m, big - 1 - m), fill=255)
    elif shape == "triangle":
        draw.polygon([(big / 2, 0), (big - 1, big - 1), (0, big - 1)], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    small = img.resize((size, size), Image.Resampling.BOX)
    alpha = np.asarray(small, dtype=np.float32) / 255.0
    alpha.setflags(write=False)
    return alpha


def _blend(frame: np.ndarray, alpha: np.ndarray, color: np.ndarray, x0: int, y0: int) -> None:
    """Blend a flat ``color`` through ``alpha`` into ``frame`` at top-left ``(x0, y0)``, clipped."""
    h, w = frame.shape[:2]
    ah, aw = alpha.shape
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(w, x0 + aw), min(h, y0 + ah)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    a = alpha[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0, None]
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    region += (color - region) * a
    frame[fy0:fy1, fx0:fx1] = np.clip(np.rint(region), 0, 255).astype(np.uint8)


def draw_object(frame: np.ndarray, spec: SceneSpec, t: int) -> None:
    """Draw the object of frame ``t`` in place, with its wrapped copies at the borders."""
    h, w = frame.shape[:2]
    size = object_pixel_size(spec, w, h)
    alpha = shape_alpha(spec.shape, size)
    color = np.asarray(vocab.COLORS[spec.color], np.float32)
    cx, cy = object_center(spec, w, h, t)
    x0, y0 = int(round(cx - size / 2)), int(round(cy - size / 2))
    for dx in (-w, 0, w):
        for dy in (-h, 0, h):
            _blend(frame, alpha, color, x0 + dx, y0 + dy)


# ----------------------------------------------------------------------------- text


def font_path() -> str | None:
    """A DejaVu Sans Bold TTF: matplotlib's bundled copy (same everywhere), else the system's."""
    spec = importlib.util.find_spec("matplotlib")
    candidates = []
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / _FONT_FILE)
    candidates.append(Path("/usr/share/fonts/truetype/dejavu") / _FONT_FILE)
    for c in candidates:
        if c.is_file():
            return str(c)
    return None


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = font_path()
    if path is not None:
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=64)
def _text_layer(
    text: str, style: str, width: int, height: int, size: int
) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
    """``(box, rgb, alpha)`` of the text, cropped to its box ``(x0, y0, x1, y1)``."""
    font = _font(size)
    # Shrink until the line fits in 92% of the width (titles in portrait frames).
    while size > 8 and font.getlength(text) > 0.92 * width:
        size -= 1
        font = _font(size)
    stroke = max(1, size // 12)
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    cy = height * (0.2 if style == "title" else 0.88)
    draw.text(
        (width / 2, cy),
        text,
        font=font,
        fill=TEXT_FILL + (255,),
        anchor="mm",
        stroke_width=stroke,
        stroke_fill=TEXT_STROKE + (255,),
    )
    arr = np.asarray(layer)
    ys, xs = np.nonzero(arr[..., 3])
    if len(xs) == 0:
        box = (0, 0, 0, 0)
        return box, np.zeros((0, 0, 3), np.float32), np.zeros((0, 0, 1), np.float32)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    crop = arr[box[1] : box[3], box[0] : box[2]].astype(np.float32)
    rgb, alpha = crop[..., :3], crop[..., 3:] / 255.0
    rgb.setflags(write=False)
    alpha.setflags(write=False)
    return box, rgb, alpha


def text_box(spec: SceneSpec, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Pixel box ``(x0, y0, x1, y1)`` (exclusive ends) covered by the text, or None."""
    if not spec.has_text:
        return None
    return _text_layer(spec.text, spec.text_style, width, height, text_font_size(spec, width, height))[0]


def draw_text(frame: np.ndarray, spec: SceneSpec) -> None:
    if not spec.has_text:
        return
    h, w = frame.shape[:2]
    (x0, y0, x1, y1), rgb, alpha = _text_layer(spec.text, spec.text_style, w, h, text_font_size(spec, w, h))
    if x1 <= x0:
        return
    region = frame[y0:y1, x0:x1].astype(np.float32)
    region += (rgb - region) * alpha
    frame[y0:y1, x0:x1] = np.clip(np.rint(region), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- frames


def iter_scene_frames(spec: SceneSpec, width: int, height: int, num_frames: int) -> Iterator[np.ndarray]:
    """Yield the ``num_frames`` frames ``[H, W, 3]`` uint8 of a scene, one at a time."""
    if width < 2 or height < 2 or num_frames < 0:
        raise ValueError(f"bad frame size {width}x{height} or frame count {num_frames}")
    if num_frames == 0:
        return
    offsets = [pan_offset(spec, width, t) for t in range(num_frames)]
    x_start = min(offsets)
    canvas = background_field(spec, width, height, x_start, max(offsets) + width)
    for t, off in enumerate(offsets):
        frame = canvas[:, off - x_start : off - x_start + width].copy()
        draw_object(frame, spec, t)
        draw_text(frame, spec)
        yield frame


def render_scene_frames(spec: SceneSpec, width: int, height: int, num_frames: int) -> np.ndarray:
    """All frames of a scene as ``[T, H, W, 3]`` uint8; deterministic given the arguments."""
    out = np.empty((num_frames, height, width, 3), np.uint8)
    for t, frame in enumerate(iter_scene_frames(spec, width, height, num_frames)):
        out[t] = frame
    return out


def iter_media_frames(media: MediaSpec) -> Iterator[np.ndarray]:
    """Every frame of a media file, scene after scene (hard cuts between them)."""
    for scene, n in zip(media.scenes, media.scene_frames):
        yield from iter_scene_frames(scene, media.width, media.height, n)


def sample_demo_frames(num: int, size: int, seed: int, static_fraction: float = 0.15, text_fraction: float = 0.15) -> np.ndarray:
    """``num`` frames of random demo scenes, resized to ``size`` x ``size``: ``[num, size, size, 3]`` uint8.

    Scenes are drawn with the corpus's own renderer at 144 px (4 frames each) and downsized with
    an antialiased bilinear filter, as curation and the feature cache do; for VAE tests and
    benchmarks that need frames of the demo's kind without building the corpus.
    """
    import torch  # the resize matches the feature cache's; torch is a core dependency

    from soraflow.demo.config import DemoConfig
    from soraflow.demo.spec import random_scene

    rng = np.random.default_rng(seed)
    cfg = DemoConfig()
    out: list[np.ndarray] = []
    while len(out) < num:
        spec = random_scene(rng, cfg, static=bool(rng.random() < static_fraction), with_text=bool(rng.random() < text_fraction))
        clip = render_scene_frames(spec, 144, 144, 24)
        for t in rng.choice(len(clip), size=4, replace=False):
            x = torch.from_numpy(clip[t]).permute(2, 0, 1)[None].float()
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
            out.append(x[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy())
    return np.stack(out[:num])
