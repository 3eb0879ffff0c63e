"""``buckets`` section of params.yaml: the Open-Sora ``bucket_config`` and its companions.

``bucket_config`` has the original's shape, resolution name -> {num_frames: [keep_prob,
batch_size]}, with ``[0.0, null]`` disabling a bucket. Frame-count keys may be strings (JSON
needs them) and resolution names may be numbers (YAML reads ``256:`` as an int); both are
normalised. Batch sizes are per rank (per GPU), as in the original.

``extra_resolutions`` adds user tables next to the original's ten (which cannot be
redefined): a pixel count and either explicit sizes or aspect ratios turned into sizes by the
original's rounding rule, optionally snapped to multiples of ``snap``.

The demo defaults are tiny (32 and 64 pixel-class tables, 1/8/16 frames) so that the demo
trains on a CPU; the original's stage-2 config is in ``PUBLISHED_STAGE2`` for reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator

from soraflow.buckets.tables import ResolutionTable, builtin_tables, table_from_ratios, table_from_sizes
from soraflow.config_base import StrictModel, parse_model

__all__ = [
    "BucketsConfig",
    "PUBLISHED_STAGE2",
    "ResolutionSpec",
    "normalise_bucket_config",
    "parse_bucket_config",
]

BucketEntry = tuple[float, int | None]

#: The original's published stage-2 config of Open-Sora 1.1 (frame_interval 3).
PUBLISHED_STAGE2: dict[str, dict[int, BucketEntry]] = {
    "144p": {1: (1.0, 48), 16: (1.0, 17), 32: (1.0, 9), 64: (1.0, 4), 128: (1.0, 1)},
    "256": {1: (0.8, 254), 16: (0.5, 17), 32: (0.5, 9), 64: (0.5, 4), 128: (0.5, 1)},
    "240p": {1: (0.1, 20), 16: (0.9, 17), 32: (0.8, 9), 64: (0.8, 4), 128: (0.8, 2)},
    "512": {1: (0.5, 86), 16: (0.2, 4), 32: (0.2, 2), 64: (0.2, 1), 128: (0.0, None)},
    "480p": {1: (0.4, 54), 16: (0.4, 4), 32: (0.0, None)},
    "720p": {1: (0.1, 20), 16: (0.1, 2), 32: (0.0, None)},
    "1024": {1: (0.3, 20)},
    "1080p": {1: (0.4, 8)},
}


def _frame_key(res: str, key: Any) -> int:
    where = f"bucket_config[{res!r}][{key!r}]"
    if isinstance(key, bool):
        raise ValueError(f"{where}: frame count must be a positive integer")
    if isinstance(key, int):
        t = key
    elif isinstance(key, float) and key.is_integer():
        t = int(key)
    elif isinstance(key, str) and key.strip().lstrip("+").isdigit():
        t = int(key.strip())
    else:
        raise ValueError(f"{where}: frame count must be a positive integer")
    if t <= 0:
        raise ValueError(f"{where}: frame count must be a positive integer")
    return t


def _entry(res: str, t: int, value: Any) -> BucketEntry:
    where = f"bucket_config[{res!r}][{t}]"
    if isinstance(value, Mapping):
        if set(value) - {"keep_prob", "batch_size"}:
            raise ValueError(f"{where}: expected [keep_prob, batch_size], got {dict(value)!r}")
        value = [value.get("keep_prob"), value.get("batch_size")]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{where}: expected [keep_prob, batch_size], got {value!r}")
    prob, bs = value
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not math.isfinite(prob):
        raise ValueError(f"{where}: keep probability must be a number in [0, 1], got {prob!r}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"{where}: keep probability must be in [0, 1], got {prob!r}")
    if bs is None:
        if prob > 0:
            raise ValueError(f"{where}: batch size missing for an enabled bucket (keep probability {prob})")
        return float(prob), None
    if isinstance(bs, bool) or not isinstance(bs, int) and not (isinstance(bs, float) and bs.is_integer()):
        raise ValueError(f"{where}: batch size must be a positive integer or null, got {bs!r}")
    if int(bs) <= 0:
        raise ValueError(f"{where}: batch size must be a positive integer, got {bs!r}")
    return float(prob), int(bs)


def normalise_bucket_config(raw: Any) -> dict[str, dict[int, BucketEntry]]:
    """Validate a bare ``bucket_config`` mapping and return it with str names and int frames.

    Raises ``ValueError`` naming the bad entry. Resolution names are not checked here (that
    needs the user tables); :class:`BucketsConfig` does it.
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"bucket_config must be a mapping of resolution -> {{num_frames: [keep_prob, batch_size]}}, got {type(raw).__name__}")
    if not raw:
        raise ValueError("bucket_config is empty: no bucket would accept any clip")
    out: dict[str, dict[int, BucketEntry]] = {}
    for res, frames in raw.items():
        name = str(res)
        if name in out:
            raise ValueError(f"bucket_config[{name!r}]: resolution given twice")
        if not isinstance(frames, Mapping) or not frames:
            raise ValueError(f"bucket_config[{name!r}]: expected a non-empty mapping num_frames -> [keep_prob, batch_size], got {frames!r}")
        entries: dict[int, BucketEntry] = {}
        for key, value in frames.items():
            t = _frame_key(name, key)
            if t in entries:
                raise ValueError(f"bucket_config[{name!r}][{t}]: frame count given twice")
            entries[t] = _entry(name, t, value)
        out[name] = entries
    return out


class ResolutionSpec(StrictModel):
    """A user resolution table: ``pixels`` plus either ``aspect_ratios`` or ``sizes``.

    ``aspect_ratios`` are ``H/W`` numbers or ``"H:W"`` strings (``"9:16"`` = 0.5625, landscape);
    keys become ``f"{ratio:.2f}"``. ``sizes`` maps keys to explicit ``[H, W]``. ``snap``
    rounds both sides to the nearest multiple (for example 16).
    """

    pixels: int = Field(gt=0, le=100_000_000)
    aspect_ratios: list[float | str] | None = None
    sizes: dict[str, tuple[int, int]] | None = None
    snap: int | None = Field(None, ge=2, le=512)

    @model_validator(mode="after")
    def _one_source(self) -> ResolutionSpec:
        if (self.aspect_ratios is None) == (self.sizes is None):
            raise ValueError("give exactly one of aspect_ratios or sizes")
        if self.aspect_ratios is not None and not self.aspect_ratios:
            raise ValueError("aspect_ratios is empty")
        if self.sizes is not None and not self.sizes:
            raise ValueError("sizes is empty")
        return self

    def table(self, name: str) -> ResolutionTable:
        if self.aspect_ratios is not None:
            return table_from_ratios(name, self.pixels, self.aspect_ratios, self.snap)
        assert self.sizes is not None
        return table_from_sizes(name, self.pixels, self.sizes, self.snap)


def _demo_resolutions() -> dict[str, ResolutionSpec]:
    return {
        "64px": ResolutionSpec(pixels=64 * 64, aspect_ratios=["9:16", "3:4", "1:1", "4:3", "16:9"], snap=16),
        # snap 8: sizes 24..40 keep 4x-VAE latents even, so 2x2 patches tile them
        "32px": ResolutionSpec(pixels=32 * 32, aspect_ratios=["9:16", "3:4", "1:1", "4:3", "16:9"], snap=8),
    }


def _demo_bucket_config() -> dict[str, dict[int, BucketEntry]]:
    return {
        "32px": {1: (1.0, 16), 8: (1.0, 8)},
    }


class BucketsConfig(StrictModel):
    """Which clips train at which size, frame count and batch size."""

    #: resolution name -> {num_frames: [keep_prob, batch_size per rank]}; ``[0.0, null]`` disables.
    bucket_config: dict[str, dict[int, tuple[float, int | None]]] = Field(default_factory=_demo_bucket_config)
    #: Source frames between two sampled frames; a video goes to frame bucket t only if T > t * frame_interval.
    frame_interval: int = Field(2, ge=1, le=64)
    #: Seed of the bucket draws, the shuffles and the clip start frames (with the epoch).
    seed: int = Field(42, ge=0, le=2**63 - 1)
    #: User tables next to the original's ten.
    extra_resolutions: dict[str, ResolutionSpec] = Field(default_factory=_demo_resolutions)
    #: Drop each bucket's last incomplete batch (training); ``false`` keeps it.
    drop_last: bool = True
    #: Every rank trains the same bucket at each step (batches dealt in same-bucket runs of the
    #: rank count), so no rank waits for a larger batch at the all-reduce; ``false`` deals each
    #: rank a bucket of its own, as the original.
    rank_lockstep: bool = True

    @field_validator("bucket_config", mode="before")
    @classmethod
    def _normalise(cls, v: Any) -> Any:
        return normalise_bucket_config(v)

    @field_validator("extra_resolutions", mode="before")
    @classmethod
    def _names_as_str(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): spec for k, spec in v.items()}
        return v

    @model_validator(mode="after")
    def _known_resolutions(self) -> BucketsConfig:
        builtin = builtin_tables()
        for name, spec in self.extra_resolutions.items():
            if name in builtin:
                raise ValueError(f"extra_resolutions[{name!r}]: redefines a built-in resolution of the original")
            try:
                spec.table(name)
            except ValueError as err:
                raise ValueError(f"extra_resolutions[{name!r}]: {err}") from None
        known = list(builtin) + list(self.extra_resolutions)
        for name in self.bucket_config:
            if name not in known:
                raise ValueError(f"bucket_config[{name!r}]: unknown resolution (known: {', '.join(known)})")
        return self

    def tables(self) -> dict[str, ResolutionTable]:
        """Every resolution table this config can name: the original's ten plus the user's."""
        out = dict(builtin_tables())
        for name, spec in self.extra_resolutions.items():
            out[name] = spec.table(name)
        return out


def parse_bucket_config(
    raw: Any,
    *,
    source: str = "bucket_config",
    frame_interval: int = 1,
    seed: int = 0,
    extra_resolutions: Mapping[str, Any] | None = None,
    drop_last: bool = True,
) -> BucketsConfig:
    """A :class:`BucketsConfig` from a bare ``bucket_config`` mapping (as in a YAML/JSON file).

    Raises :class:`ConfigError` naming the bad entry.
    """
    data = {
        "bucket_config": raw,
        "frame_interval": frame_interval,
        "seed": seed,
        "extra_resolutions": dict(extra_resolutions or {}),
        "drop_last": drop_last,
    }
    return parse_model(BucketsConfig, data, source)
