"""``features`` section of params.yaml: what the feature cache holds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from soraflow.config_base import StrictModel


class AugmentConfig(StrictModel):
    """Extra cached training windows whose captions are rewritten to match
    (see :mod:`soraflow.features.augment`); held-out rows are never augmented."""

    #: Cache a mirrored copy of every training window (caption words swapped by ``hflip_swap``).
    hflip: bool = False
    #: Cache a time-reversed copy (caption words swapped by ``reverse_swap``); with ``hflip`` also
    #: the mirrored-and-reversed one.
    reverse: bool = False
    hflip_swap: dict[str, str] = Field(default_factory=lambda: {"left": "right", "right": "left"})
    reverse_swap: dict[str, str] = Field(
        default_factory=lambda: {"left": "right", "right": "left", "up": "down", "down": "up"}
    )


class FeaturesConfig(StrictModel):
    output: str = "data/features"
    # Random windows (start frames) encoded per clip: more windows, more augmentation, more disk.
    windows_per_clip: int = Field(2, ge=1, le=64)
    # Single frames of each training video also cached as images, in the 1-frame bucket of the
    # video's resolution (the same height and width, that bucket's batch size): image-video joint
    # training from the videos themselves: an image step holds 1/T of a T-frame step's tokens and a
    # batch of independent objects (on the demo CPU it still took ~0.6 of a video step: the optimizer,
    # EMA and all-reduce do not shrink). 0: videos train as videos only (the original).
    frame_images_per_clip: int = Field(0, ge=0, le=64)
    # Latest source frame a window may start at (null: anywhere in the clip). Small values keep
    # windows at the start of their scene, where the demo corpus with `object_start: entry_edge`
    # shows the direction of motion in the object's position.
    max_window_start: int | None = Field(None, ge=0)
    # Clips per VAE call while building the cache.
    encode_batch: int = Field(8, ge=1, le=4096)
    # Threads decoding and resizing clips while the VAE encodes (PyAV and torch release the GIL):
    # the encoded latents do not depend on it. 1: decode in the encoding loop.
    decode_workers: int = Field(2, ge=1, le=64)
    # Rows per safetensors shard (a shard holds one bucket's rows).
    shard_rows: int = Field(512, ge=1)
    splits: list[Literal["train", "heldout"]] = Field(default_factory=lambda: ["train", "heldout"], min_length=1)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
