"""Caption-aware augmentation of the feature cache: mirrored and time-reversed training windows.

A mirrored (horizontally flipped) or time-reversed video shows the opposite motion, so its
caption must say so: each transform rewrites the caption with a word-swap table
(``left`` <-> ``right`` for a mirror; also ``up`` <-> ``down`` for time reversal). The pair
"same frames, opposite word" is the cleanest signal a text-to-video model gets that the
direction word decides how things move (the demo's model ignored the word without it).

Frames are transformed in pixel space, before the VAE, so the cached latents are the VAE's
encoding of the transformed video (a convolutional VAE is not mirror-equivariant). Only
training windows are augmented; held-out rows stay as recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from soraflow.features.config import AugmentConfig

__all__ = ["Variant", "cache_variants", "swap_words", "transform_video"]


@dataclass(frozen=True)
class Variant:
    """One way a training window is cached: ``name`` is "" for the recorded frames."""

    hflip: bool = False
    reverse: bool = False

    @property
    def name(self) -> str:
        return "+".join(n for n, on in (("hflip", self.hflip), ("reverse", self.reverse)) if on)


def cache_variants(config: AugmentConfig) -> list[Variant]:
    """The recorded window first, then every combination of the enabled transforms."""
    flips = (False, True) if config.hflip else (False,)
    reverses = (False, True) if config.reverse else (False,)
    return [Variant(hflip=f, reverse=r) for r in reverses for f in flips]


def swap_words(text: str, table: dict[str, str]) -> str:
    """Replace whole words of ``text`` by ``table`` all at once (so ``left`` <-> ``right`` swaps,
    not both ending as one); matching ignores case and keeps a leading capital."""
    if not table:
        return text
    lookup = {k.lower(): v for k, v in table.items()}
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(lookup, key=len, reverse=True)) + r")\b", re.I)

    def repl(m: re.Match[str]) -> str:
        word = lookup[m.group(0).lower()]
        return word[:1].upper() + word[1:] if m.group(0)[:1].isupper() else word

    return pattern.sub(repl, text)


def variant_caption(text: str, variant: Variant, config: AugmentConfig) -> str:
    """The caption that describes ``variant`` of a video captioned ``text``."""
    if variant.hflip:
        text = swap_words(text, config.hflip_swap)
    if variant.reverse:
        text = swap_words(text, config.reverse_swap)
    return text


def transform_video(video: torch.Tensor, variant: Variant) -> torch.Tensor:
    """``video [C, T, H, W]`` mirrored left-right and/or played backwards."""
    dims = [d for d, on in ((3, variant.hflip), (1, variant.reverse)) if on]
    return video.flip(dims) if dims else video
