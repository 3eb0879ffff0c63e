"""``demo`` section of params.yaml: size, seed and look of the generated demo corpus."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from soraflow.config_base import StrictModel
from soraflow.demo.spec import MAX_OBJECT_SIZE

_ASPECT_RE = re.compile(r"^(\d+):(\d+)$")
_Speed = Annotated[float, Field(ge=0.0, le=0.5)]
_Size = Annotated[float, Field(ge=0.0, le=MAX_OBJECT_SIZE)]


class DemoConfig(StrictModel):
    """How many files, of which sizes, lengths and kinds of scene.

    Speeds are fractions of the frame extent along the motion axis per frame (width for
    left/right, height for up/down); pan speeds are fractions of the frame width per frame.
    """

    output: str = "data/demo"
    seed: int = Field(0, ge=0)
    num_videos: int = Field(48, ge=1, le=10_000)
    num_images: int = Field(6, ge=0, le=10_000)

    #: Fraction of video scenes with no motion at all (object still, no pan).
    static_fraction: float = Field(0.15, ge=0.0, le=1.0)
    #: Fraction of video scenes with burned-in text (title or subtitle).
    text_fraction: float = Field(0.15, ge=0.0, le=1.0)
    #: Fraction of the non-static scenes whose camera pans (the background scrolls).
    pan_fraction: float = Field(0.25, ge=0.0, le=1.0)
    fps_choices: list[int] = Field(default_factory=lambda: [24, 25, 30], min_length=1)
    aspect_ratios: list[str] = Field(default_factory=lambda: ["16:9", "4:3", "1:1", "9:16"], min_length=1)
    #: Lengths of the shorter frame side (even, so H.264 yuv420p accepts every size).
    short_sides: list[int] = Field(default_factory=lambda: [144, 240, 360, 480], min_length=1)
    #: Video lengths in seconds; one video is forced under 1 s and one over 10 s when the range allows.
    min_seconds: float = Field(0.6, gt=0.0, le=600.0)
    max_seconds: float = Field(12.0, gt=0.0, le=600.0)
    min_scene_seconds: float = Field(0.5, gt=0.0, le=60.0)
    max_scenes: int = Field(4, ge=1, le=16)
    speed_range: tuple[_Speed, _Speed] = (0.015, 0.03)
    pan_speed_range: tuple[_Speed, _Speed] = (0.006, 0.012)
    #: Object size as a fraction of the shorter frame side.
    object_size_range: tuple[_Size, _Size] = (0.25, 0.35)
    #: Where a moving object is at a scene's first frame: ``random`` (anywhere along its path) or
    #: ``entry_edge`` (touching the border it moves away from: a "moving right" scene starts
    #: with the object at the left edge). With random starts and wrap-around motion every frame
    #: of a window looks the same on average whatever the direction; with entry-edge starts the
    #: first frames of a scene show the direction in where the object is.
    object_start: Literal["random", "entry_edge"] = "random"
    workers: int = Field(2, ge=1, le=64)
    crf: int = Field(23, ge=0, le=51)
    preset: str = "veryfast"

    @field_validator("fps_choices")
    @classmethod
    def _fps_ok(cls, v: list[int]) -> list[int]:
        for fps in v:
            if not 1 <= fps <= 120:
                raise ValueError(f"fps {fps} outside 1..120")
        return v

    @field_validator("aspect_ratios")
    @classmethod
    def _aspects_ok(cls, v: list[str]) -> list[str]:
        for ar in v:
            m = _ASPECT_RE.match(ar)
            if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
                raise ValueError(f"aspect ratio {ar!r} is not 'W:H' with positive integers")
            w, h = int(m.group(1)), int(m.group(2))
            if max(w, h) / min(w, h) > 4:
                raise ValueError(f"aspect ratio {ar!r} is more elongated than 4:1")
        return v

    @field_validator("short_sides")
    @classmethod
    def _sides_ok(cls, v: list[int]) -> list[int]:
        for s in v:
            if s % 2 or not 32 <= s <= 1080:
                raise ValueError(f"short side {s} must be even and within 32..1080")
        return v

    @field_validator("speed_range", "pan_speed_range", "object_size_range")
    @classmethod
    def _range_ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"range {list(v)} must satisfy low <= high")
        return v

    @field_validator("preset")
    @classmethod
    def _preset_ok(cls, v: str) -> str:
        presets = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
        if v not in presets:
            raise ValueError(f"x264 preset {v!r} not one of {presets}")
        return v

    @model_validator(mode="after")
    def _lengths_ok(self) -> DemoConfig:
        if self.min_seconds > self.max_seconds:
            raise ValueError(f"min_seconds {self.min_seconds} > max_seconds {self.max_seconds}")
        if self.min_scene_seconds > self.max_seconds:
            raise ValueError(f"min_scene_seconds {self.min_scene_seconds} > max_seconds {self.max_seconds}")
        if self.speed_range[0] <= 0:
            raise ValueError(f"speed_range {list(self.speed_range)} must start above 0 (moving objects must move)")
        if self.object_size_range[0] <= 0:
            raise ValueError(f"object_size_range {list(self.object_size_range)} must start above 0")
        if self.pan_speed_range[1] >= self.speed_range[0]:
            # A pan as fast as the object would make "moving left" look like "standing still".
            raise ValueError(
                f"pan_speed_range {list(self.pan_speed_range)} must stay below speed_range {list(self.speed_range)}"
            )
        return self

    def aspect_pairs(self) -> list[tuple[int, int]]:
        """``[(w, h), ...]`` from the ``"W:H"`` strings."""
        out = []
        for ar in self.aspect_ratios:
            w, h = ar.split(":")
            out.append((int(w), int(h)))
        return out
