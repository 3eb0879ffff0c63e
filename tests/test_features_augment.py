"""Caption-aware augmentation of the feature cache: word swaps and video transforms."""

from __future__ import annotations

import torch

from soraflow.features.augment import Variant, cache_variants, swap_words, transform_video, variant_caption
from soraflow.features.config import AugmentConfig


def test_swap_words_swaps_at_once_whole_words_only():
    table = {"left": "right", "right": "left", "up": "down", "down": "up"}
    assert swap_words("a red circle moving left, camera panning right", table) == (
        "a red circle moving right, camera panning left"
    )
    assert swap_words("Left then up", table) == "Right then down"  # case kept on the first letter
    # parts of longer words are not words: "leftover", "upright", "downtown" stay
    assert swap_words("leftover upright downtown", table) == "leftover upright downtown"
    assert swap_words("standing still", table) == "standing still"
    assert swap_words("moving left", {}) == "moving left"


def test_variants_and_their_captions():
    off = AugmentConfig()
    assert cache_variants(off) == [Variant()]
    both = AugmentConfig(hflip=True, reverse=True)
    variants = cache_variants(both)
    assert [v.name for v in variants] == ["", "hflip", "reverse", "hflip+reverse"]
    text = "a blue square moving up on a gray background, camera panning left"
    got = [variant_caption(text, v, both) for v in variants]
    assert got == [
        text,
        "a blue square moving up on a gray background, camera panning right",  # mirror: left <-> right
        "a blue square moving down on a gray background, camera panning right",  # reversed: both axes
        "a blue square moving down on a gray background, camera panning left",  # both: up/down only
    ]


def test_transform_video_mirrors_width_and_reverses_time():
    video = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)  # [C, T, H, W]
    assert transform_video(video, Variant()) is video
    flipped = transform_video(video, Variant(hflip=True))
    assert torch.equal(flipped[:, :, :, 0], video[:, :, :, -1]) and torch.equal(flipped[:, 0], video[:, 0].flip(-1))
    backwards = transform_video(video, Variant(reverse=True))
    assert torch.equal(backwards[:, 0], video[:, -1]) and torch.equal(backwards[:, 2], video[:, 0])
    both = transform_video(video, Variant(hflip=True, reverse=True))
    assert torch.equal(both, video.flip(1).flip(3))
