"""``diffusion`` section of params.yaml: which noise process, its schedule, its sampler.

Two processes share one model and one mask scheme:

* ``iddpm`` (Open-Sora 1.1): 1000 discrete steps, linear betas, epsilon prediction with
  learned-range variance, hybrid loss (MSE + variational bound). Samplers: ``iddpm``
  (ancestral on a respaced schedule, 100 steps) and ``dpm-solver`` (DPM-Solver++ order 2,
  about 20 steps).
* ``rflow`` (Open-Sora 1.2): rectified flow, velocity target, logit-normal timesteps. Sampler:
  ``euler`` (about 30 steps).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from soraflow.config_base import StrictModel

DiffusionType = Literal["iddpm", "rflow"]
SamplerName = Literal["iddpm", "dpm-solver", "euler"]

#: Samplers each process can use; the first is the default.
SAMPLERS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "iddpm": ("iddpm", "dpm-solver"),
    "rflow": ("euler",),
}
#: Default number of sampling steps per sampler.
DEFAULT_STEPS: dict[str, int] = {"iddpm": 100, "dpm-solver": 20, "euler": 30}


def check_guidance_interval(interval: tuple[float, float] | None) -> None:
    """Raise unless ``interval`` is None or ``(low, high)`` with ``0 <= low < high <= 1``."""
    if interval is not None and not 0.0 <= interval[0] < interval[1] <= 1.0:
        raise ValueError(f"guidance_interval must satisfy 0 <= low < high <= 1, got {list(interval)}")


class RFlowConfig(StrictModel):
    """Rectified-flow options (used only when ``diffusion.type`` is ``rflow``)."""

    #: How training timesteps are drawn: ``logit-normal`` (t = sigmoid(N(mean, std))) or ``uniform``.
    timestep_sampling: Literal["logit-normal", "uniform"] = "logit-normal"
    logit_mean: float = Field(0.0, ge=-10.0, le=10.0)
    logit_std: float = Field(1.0, gt=0.0, le=10.0)
    #: Open-Sora 1.2's resolution/length-dependent shift of timesteps towards noise, applied in
    #: training and sampling: t' = r t / (1 + (r - 1) t), r = sqrt(H W / base_pixels) *
    #: sqrt(T / base_frames) * scale (pixel H, W; latent frames T).
    resolution_shift: bool = False
    shift_base_pixels: int = Field(512 * 512, ge=1)
    shift_base_frames: int = Field(1, ge=1)
    shift_scale: float = Field(1.0, gt=0.0, le=100.0)
    #: Weight of a temporal-difference term added to the velocity MSE: the mean square of the
    #: error's change from one frame to the next (only pairs of generated frames). An error that
    #: is the same in every frame (a wrong background) is not counted again; one that changes
    #: from frame to frame (a wrong motion) is counted up to 1 + 4w times. 0 = plain MSE.
    temporal_loss_weight: float = Field(0.0, ge=0.0, le=100.0)


class DiffusionConfig(StrictModel):
    """The noise process, its schedule and its default sampler."""

    type: DiffusionType = "iddpm"
    num_timesteps: int = Field(1000, ge=2, le=100_000)
    #: Beta schedule (IDDPM): ``linear`` from ``beta_start`` to ``beta_end`` (Open-Sora 1.1),
    #: ``scaled_linear`` or ``squaredcos_cap_v2`` (cosine), as diffusers names them.
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    beta_start: float = Field(1e-4, gt=0.0, lt=1.0)
    beta_end: float = Field(0.02, gt=0.0, lt=1.0)
    #: The model also predicts the variance (IDDPM learned range; the model returns 2C channels).
    learn_sigma: bool = True
    #: ``null`` = the type's default (``iddpm`` for iddpm, ``euler`` for rflow).
    sampler: SamplerName | None = None
    #: ``null`` = the sampler's default (iddpm 100, dpm-solver 20, euler 30).
    sampling_steps: int | None = Field(None, ge=1, le=100_000)
    #: Classifier-free guidance scale (1.0 turns guidance off and skips the unconditional pass).
    guidance_scale: float = Field(7.0, ge=0.0, le=100.0)
    #: Guide only the first N latent channels (Open-Sora 1.1 used 3 of 4); ``null`` = all.
    cfg_channels: int | None = Field(None, ge=1)
    #: Guide only where the timestep, as a fraction of ``num_timesteps`` (1 = pure noise), is in
    #: ``[low, high]``; elsewhere the conditional prediction alone (one model call). ``null`` = every step.
    guidance_interval: tuple[float, float] | None = None
    rflow: RFlowConfig = RFlowConfig()

    @model_validator(mode="after")
    def _check(self) -> DiffusionConfig:
        if self.beta_end <= self.beta_start:
            raise ValueError(f"beta_end ({self.beta_end}) must be larger than beta_start ({self.beta_start})")
        if self.sampler is not None and self.sampler not in SAMPLERS_BY_TYPE[self.type]:
            raise ValueError(
                f"sampler {self.sampler!r} does not work with type {self.type!r}; "
                f"choose one of {list(SAMPLERS_BY_TYPE[self.type])} or null"
            )
        check_guidance_interval(self.guidance_interval)
        if self.sampling_steps is not None and self.sampling_steps > self.num_timesteps:
            raise ValueError(
                f"sampling_steps ({self.sampling_steps}) cannot exceed num_timesteps ({self.num_timesteps})"
            )
        return self

    @property
    def resolved_sampler(self) -> str:
        """The sampler actually used: ``sampler`` or the type's default."""
        return self.sampler or SAMPLERS_BY_TYPE[self.type][0]

    @property
    def resolved_steps(self) -> int:
        """The number of sampling steps actually used."""
        return self.sampling_steps or DEFAULT_STEPS[self.resolved_sampler]
