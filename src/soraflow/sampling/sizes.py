"""Which video sizes a generator accepts, and the error that names the allowed ones.

Two rules, both checked before any sampling work:

* the model and VAE rule: height and width must be multiples of ``vae downsample x patch``
  (the latents must split evenly into patches) and the frame count a multiple of the
  temporal patch;
* the bucket rule (when a ``buckets`` config is given): ``(num_frames, height, width)`` must
  be one of the enabled training buckets (sizes from the resolution tables of the enabled
  resolutions, frame counts from their enabled frame keys). Sampling outside the trained
  sizes is what the issue forbids: the model never saw those position/size embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

from soraflow.config_base import ConfigError

__all__ = ["SizeRule", "bucket_sizes", "check_size"]


@dataclass(frozen=True)
class SizeRule:
    """``spatial_multiple``: H and W must be multiples of it; ``frame_multiple`` likewise for T."""

    spatial_multiple: int
    frame_multiple: int = 1


def bucket_sizes(buckets) -> dict[tuple[int, int], list[int]]:
    """``{(H, W): sorted frame counts}`` over the enabled buckets of a :class:`BucketsConfig`."""
    tables = buckets.tables()
    out: dict[tuple[int, int], set[int]] = {}
    for res, frames in buckets.bucket_config.items():
        enabled = [t for t, (prob, bs) in frames.items() if prob > 0 and bs is not None]
        if not enabled:
            continue
        for _key, h, w in tables[res].ratios:
            out.setdefault((int(h), int(w)), set()).update(enabled)
    return {k: sorted(v) for k, v in sorted(out.items())}


def _fmt_sizes(sizes: dict[tuple[int, int], list[int]]) -> str:
    return ", ".join(f"{h}x{w} ({'/'.join(str(t) for t in ts)} frames)" for (h, w), ts in sizes.items())


def check_size(num_frames: int, height: int, width: int, rule: SizeRule, buckets=None) -> None:
    """Raise :class:`ConfigError` naming the allowed sizes when ``(T, H, W)`` cannot be sampled."""
    for name, value in (("num_frames", num_frames), ("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"sample.{name}: must be a positive integer, got {value!r}")
    m = rule.spatial_multiple
    if height % m or width % m:
        raise ConfigError(
            f"sample size {height}x{width}: height and width must be multiples of {m} "
            f"(VAE downsampling x patch size); e.g. {max(m, height // m * m)}x{max(m, width // m * m)}"
        )
    if num_frames % rule.frame_multiple:
        raise ConfigError(f"sample.num_frames={num_frames}: must be a multiple of the temporal patch {rule.frame_multiple}")
    if buckets is None:
        return
    sizes = bucket_sizes(buckets)
    if (height, width) not in sizes:
        raise ConfigError(
            f"sample size {height}x{width} is not a training bucket; allowed (height x width): {_fmt_sizes(sizes)}"
        )
    if num_frames not in sizes[(height, width)]:
        raise ConfigError(
            f"sample.num_frames={num_frames} at {height}x{width} is not a training bucket; allowed: "
            f"{'/'.join(str(t) for t in sizes[(height, width)])} frames (all sizes: {_fmt_sizes(sizes)})"
        )
