"""Resolution tables: a name, a pixel count, and a bucket size ``(H, W)`` per aspect-ratio key.

The ten built-in tables are the Open-Sora 1.1 tables, exactly (``aspect_ratios.json``, copied
from the original's ``opensora/datasets/aspect.py``; some of its entries were adjusted by hand
there, so they are data, not the output of a formula). The key of a size is ``H/W`` written
with two decimals as a string (``"0.56"`` is 9:16 landscape, ``(144, 256)`` at 144p); a few
tables write it without the trailing zero (``"0.5"``), and the keys are kept as written.

User tables are built from explicit sizes or from aspect ratios with the original's rounding
rule (:func:`size_for_ratio`), optionally snapped to multiples of 16 so that latents of an
8x VAE split evenly into 2x2 patches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = [
    "BUILTIN_RESOLUTIONS",
    "ResolutionTable",
    "builtin_tables",
    "parse_ratio",
    "size_for_ratio",
    "table_from_ratios",
    "table_from_sizes",
]

#: The original's resolution names, in the order of ``aspect_ratios.json``.
BUILTIN_RESOLUTIONS: tuple[str, ...] = (
    "144p", "256", "240p", "360p", "512", "480p", "720p", "1024", "1080p", "4k",
)


@dataclass(frozen=True)
class ResolutionTable:
    """One resolution: its pixel budget and the bucket size for each aspect-ratio key.

    ``ratios`` keeps the keys in their table order; that order decides ties in the
    closest-ratio search (the original uses ``min`` over the dict, so the first key wins).
    """

    name: str
    pixels: int
    ratios: tuple[tuple[str, int, int], ...]  # (key, H, W)

    def __post_init__(self) -> None:
        if self.pixels <= 0:
            raise ValueError(f"resolution {self.name!r}: pixels must be positive, got {self.pixels}")
        if not self.ratios:
            raise ValueError(f"resolution {self.name!r}: no sizes")
        seen: dict[float, str] = {}
        for key, h, w in self.ratios:
            value = float(key)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"resolution {self.name!r}: aspect-ratio key {key!r} is not a positive number")
            if value in seen:
                raise ValueError(f"resolution {self.name!r}: keys {seen[value]!r} and {key!r} are the same ratio")
            seen[value] = key
            if h <= 0 or w <= 0:
                raise ValueError(f"resolution {self.name!r}: size {h}x{w} for {key!r} is not positive")

    @property
    def keys(self) -> list[str]:
        return [k for k, _, _ in self.ratios]

    def size(self, key: str) -> tuple[int, int]:
        for k, h, w in self.ratios:
            if k == key:
                return h, w
        raise KeyError(f"resolution {self.name!r} has no aspect-ratio key {key!r}")

    def closest_key(self, height: float, width: float) -> str:
        """The key closest to ``height / width`` (first in table order on a tie), as the original."""
        ar = height / width
        return min(self.keys, key=lambda k: abs(float(k) - ar))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(key values, H, W)`` as arrays in table order."""
        values = np.array([float(k) for k, _, _ in self.ratios], dtype=np.float64)
        hs = np.array([h for _, h, _ in self.ratios], dtype=np.int64)
        ws = np.array([w for _, _, w in self.ratios], dtype=np.int64)
        return values, hs, ws

    def to_json(self) -> dict:
        return {"pixels": self.pixels, "ratios": {k: [h, w] for k, h, w in self.ratios}}


def _load_json() -> dict:
    try:
        text = resources.files("soraflow.buckets").joinpath("aspect_ratios.json").read_text()
    except (FileNotFoundError, ModuleNotFoundError):  # pragma: no cover - non-package layouts
        text = (Path(__file__).parent / "aspect_ratios.json").read_text()
    return json.loads(text)


@lru_cache(maxsize=1)
def builtin_tables() -> Mapping[str, ResolutionTable]:
    """The original's ten tables by name (cached; tables are immutable)."""
    data = _load_json()
    out: dict[str, ResolutionTable] = {}
    for name, entry in data.items():
        ratios = tuple((str(k), int(v[0]), int(v[1])) for k, v in entry["ratios"].items())
        out[name] = ResolutionTable(name=name, pixels=int(entry["pixels"]), ratios=ratios)
    if tuple(out) != BUILTIN_RESOLUTIONS:  # pragma: no cover - guards the packaged data
        raise RuntimeError(f"aspect_ratios.json holds {tuple(out)}, expected {BUILTIN_RESOLUTIONS}")
    return out


def _even_round(x: float) -> int:
    """The original's rounding: up when the ceiling is even, else down (the result is even
    unless ``x`` is already an odd integer)."""
    c = math.ceil(x)
    return c if c % 2 == 0 else math.floor(x)


def size_for_ratio(ratio: float, pixels: int, snap: int | None = None, eps: float = 1e-4) -> tuple[int, int]:
    """``(H, W)`` for an ``H/W`` ratio and a pixel budget, by the original's ``get_h_w`` rule.

    ``h = sqrt(pixels * ratio)``, then ``w = h / ratio``; each gets ``+eps`` and is rounded by
    :func:`_even_round`. With ``snap`` both sides are then rounded to the nearest multiple of
    ``snap`` (half up), at least one multiple.
    """
    if ratio <= 0 or pixels <= 0:
        raise ValueError(f"ratio and pixels must be positive, got {ratio}, {pixels}")
    h = _even_round((pixels * ratio) ** 0.5 + eps)
    w = _even_round(h / ratio + eps)
    if snap:
        h = max(snap, int(math.floor(h / snap + 0.5)) * snap)
        w = max(snap, int(math.floor(w / snap + 0.5)) * snap)
    return int(h), int(w)


def parse_ratio(value: float | int | str) -> float:
    """An ``H/W`` ratio from a number or an ``"H:W"`` string (``"9:16"`` is 0.5625, landscape)."""
    if isinstance(value, bool):
        raise ValueError(f"aspect ratio {value!r} is not a number or 'H:W'")
    if isinstance(value, (int, float)):
        r = float(value)
    elif isinstance(value, str) and ":" in value:
        a, _, b = value.partition(":")
        try:
            r = float(a) / float(b)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"aspect ratio {value!r} is not 'H:W' with positive numbers") from None
    elif isinstance(value, str):
        try:
            r = float(value)
        except ValueError:
            raise ValueError(f"aspect ratio {value!r} is not a number or 'H:W'") from None
    else:
        raise ValueError(f"aspect ratio {value!r} is not a number or 'H:W'")
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"aspect ratio {value!r} must be positive")
    return r


def table_from_ratios(
    name: str, pixels: int, ratios: Iterable[float | int | str], snap: int | None = None
) -> ResolutionTable:
    """A table whose keys are ``f"{ratio:.2f}"`` and sizes come from :func:`size_for_ratio`."""
    entries = []
    for r in sorted(parse_ratio(v) for v in ratios):
        h, w = size_for_ratio(r, pixels, snap)
        entries.append((f"{r:.2f}", h, w))
    keys = [k for k, _, _ in entries]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"resolution {name!r}: aspect ratios collide at two decimals: {dupes}")
    return ResolutionTable(name=name, pixels=int(pixels), ratios=tuple(entries))


def table_from_sizes(
    name: str, pixels: int, sizes: Mapping[str, tuple[int, int] | list[int]], snap: int | None = None
) -> ResolutionTable:
    """A table from explicit ``{key: (H, W)}``; keys are used as written (table order kept)."""
    entries = []
    for key, hw in sizes.items():
        h, w = int(hw[0]), int(hw[1])
        if snap:
            h = max(snap, int(math.floor(h / snap + 0.5)) * snap)
            w = max(snap, int(math.floor(w / snap + 0.5)) * snap)
        entries.append((str(key), h, w))
    return ResolutionTable(name=name, pixels=int(pixels), ratios=tuple(entries))
