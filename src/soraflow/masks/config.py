"""``masks`` section of params.yaml: the mix of conditioning tasks in training (Open-Sora 1.1)."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from soraflow.config_base import StrictModel

#: The nine mask types of Open-Sora 1.1, in the order the original draws them.
MASK_NAMES: tuple[str, ...] = (
    "identity",
    "quarter_random",
    "quarter_head",
    "quarter_tail",
    "quarter_head_tail",
    "image_random",
    "image_head",
    "image_tail",
    "image_head_tail",
)


class MaskRatios(StrictModel):
    """Probability of each mask type per training sample; they must sum to 1.

    ``identity``: no conditioning frame (plain text-to-video). ``quarter_*``: k in [1, T/4]
    conditioning frames at a random place / the head / the tail / both ends. ``image_*``: one
    frame (random / first / last / first and last).
    """

    identity: float = Field(0.75, ge=0.0, le=1.0)
    quarter_random: float = Field(0.025, ge=0.0, le=1.0)
    quarter_head: float = Field(0.025, ge=0.0, le=1.0)
    quarter_tail: float = Field(0.025, ge=0.0, le=1.0)
    quarter_head_tail: float = Field(0.05, ge=0.0, le=1.0)
    image_random: float = Field(0.025, ge=0.0, le=1.0)
    image_head: float = Field(0.025, ge=0.0, le=1.0)
    image_tail: float = Field(0.025, ge=0.0, le=1.0)
    image_head_tail: float = Field(0.05, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sums_to_one(self) -> MaskRatios:
        total = sum(self.as_dict().values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"mask ratios must sum to 1, they sum to {total:.6g}")
        return self

    def as_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in MASK_NAMES}


class MaskConfig(StrictModel):
    """Training-time frame masks (which frames are given as conditioning)."""

    mask_ratios: MaskRatios = MaskRatios()
