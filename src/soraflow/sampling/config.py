"""``sample`` section of params.yaml: the fixed prompt set the ``sample`` stage renders.

The demo prompts are written in the demo corpus' caption template
(:func:`soraflow.demo.vocab.caption_for`) and cover every object colour, every shape and every
motion direction, so runs of the pipeline can be compared on the same videos side by side.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from soraflow.config_base import Precision, StrictModel

#: The demo prompt set: 4 colours x 3 shapes x 5 directions, each value at least once.
DEMO_PROMPTS: tuple[str, ...] = (
    "a red circle moving right on a black background",
    "a blue square moving left on a white background",
    "a green triangle moving up on a gray background",
    "a yellow circle moving down on a navy background",
    "a red square standing still on a teal background",
    "a green circle moving left on a purple background",
    "a blue triangle moving right on a brown background",
    "a yellow square moving up on a pink background",
)


class SampleConfig(StrictModel):
    """What ``soraflow sample`` and the ``sample`` stage render, and how."""

    #: Local model folder or MLflow URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/ID/model``).
    model: str = "models/train/final"
    prompts: list[str] = Field(default_factory=lambda: list(DEMO_PROMPTS), min_length=1)
    #: Frames per loop (a training bucket's frame count; 1 = text-to-image).
    num_frames: int = Field(8, ge=1, le=1024)
    height: int = Field(32, ge=8, le=8192)
    width: int = Field(32, ge=8, le=8192)
    #: Playback fps of the written files, also the fps the model is conditioned on (the
    #: training clips' fps / frame_interval). null = 24 / the model's frame_interval.
    fps: float | None = Field(None, gt=0.0, le=240.0)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    #: null = the diffusion section's sampler / steps / guidance stored with the model.
    steps: int | None = Field(None, ge=1, le=10_000)
    sampler: Literal["iddpm", "dpm-solver", "euler"] | None = None
    guidance: float | None = Field(None, ge=0.0, le=100.0)
    #: Sample with the EMA weights (``ema.safetensors``) instead of the raw ones.
    use_ema: bool = False
    #: Precision of the denoiser's forward passes: fp32 | bf16 autocast | auto (bf16 on CUDA and on
    #: CPUs with native bf16 units, as train.mixed_precision). The VAE and the sampler stay fp32.
    mixed_precision: Precision = "fp32"
    #: Prompts per model call (bounds memory; the seed is per batch, see VideoGenerator.generate).
    batch_size: int = Field(8, ge=1, le=1024)
    #: Written files are scaled up (nearest neighbour) so their shorter side is at least this.
    min_display_size: int = Field(128, ge=0, le=4096)
    device: str = "auto"
    output: str = "data/samples"

    @field_validator("prompts")
    @classmethod
    def _no_empty_prompt(cls, v: list[str]) -> list[str]:
        for i, p in enumerate(v):
            if not p.strip():
                raise ValueError(f"prompt {i} is empty")
        return v
