"""Synthetic frames (coloured shapes on plain, gradient or checker backgrounds) for tests and
benchmarks of the demo VAE, so they need neither the demo corpus nor a video decoder."""

from __future__ import annotations

import numpy as np

_PALETTE = np.array(
    [
        (220, 30, 30), (30, 180, 40), (30, 70, 220), (245, 215, 30),
        (15, 15, 15), (235, 235, 235), (120, 120, 120), (20, 25, 90),
        (110, 40, 150), (0, 110, 130), (245, 170, 200), (110, 70, 35),
    ],
    dtype=np.float32,
)
BACKGROUNDS = ("plain", "gradient", "checker")


def synthetic_frames(
    num_frames: int,
    size: int | tuple[int, int] = 32,
    seed: int = 0,
    backgrounds: tuple[str, ...] = BACKGROUNDS,
) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 frames: one or two shapes over a background.

    Shapes are drawn with 4x supersampled (anti-aliased) edges, like the demo renderer.
    ``backgrounds`` picks among ``plain``, ``gradient`` and ``checker`` (sharp 3-8 px cells,
    the hardest for a VAE).
    """
    unknown = set(backgrounds) - set(BACKGROUNDS)
    if unknown or not backgrounds:
        raise ValueError(f"backgrounds must be a non-empty subset of {BACKGROUNDS}, got {backgrounds}")
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    ss = 4
    yy, xx = np.mgrid[0 : height * ss, 0 : width * ss].astype(np.float32) / ss
    out = np.empty((num_frames, height, width, 3), np.uint8)
    for n in range(num_frames):
        bg = _PALETTE[rng.integers(len(_PALETTE))]
        kind = backgrounds[rng.integers(len(backgrounds))]
        if kind == "plain":
            img = np.broadcast_to(bg, (height * ss, width * ss, 3)).copy()
        elif kind == "gradient":  # vertical or horizontal gradient towards a darker tone
            ramp = (yy if rng.random() < 0.5 else xx) / max(height, width)
            img = bg * (1.0 - 0.6 * ramp[..., None])
        else:  # checker of two tones, cell a few pixels
            cell = float(rng.integers(3, 9))
            check = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2)[..., None]
            img = bg * (0.65 + 0.35 * check)
        for _ in range(rng.integers(1, 3)):
            color = _PALETTE[rng.integers(4)]
            r = rng.uniform(0.12, 0.3) * min(height, width)
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            shape = rng.integers(3)
            if shape == 0:
                inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            elif shape == 1:
                inside = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
            else:  # upward triangle
                inside = (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2.0)
            img = np.where(inside[..., None], color, img)
        img = img.reshape(height, ss, width, ss, 3).mean(axis=(1, 3))
        out[n] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out
