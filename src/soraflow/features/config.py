"""``features`` section of params.yaml: what the feature cache holds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from soraflow.config_base import StrictModel


class FeaturesConfig(StrictModel):
    output: str = "data/features"
    # Random windows (start frames) encoded per clip: more windows, more augmentation, more disk.
    windows_per_clip: int = Field(2, ge=1, le=64)
    # Clips per VAE call while building the cache.
    encode_batch: int = Field(8, ge=1, le=4096)
    # Rows per safetensors shard (a shard holds one bucket's rows).
    shard_rows: int = Field(512, ge=1)
    splits: list[Literal["train", "heldout"]] = Field(default_factory=lambda: ["train", "heldout"], min_length=1)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
