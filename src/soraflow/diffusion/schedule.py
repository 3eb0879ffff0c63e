"""The discrete Gaussian noise schedule: betas from diffusers, posterior terms by hand.

The betas come from a diffusers :class:`~diffusers.DDPMScheduler` built from the config (so the
schedule and the respaced sampler are diffusers'); the quantities the training loss needs and
diffusers does not expose (posterior log-variance clipped as in improved-diffusion, the
learned-range interpolation, q(x_t | x_0) with per-sample timesteps) are derived here in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from soraflow.diffusion.config import DiffusionConfig

if TYPE_CHECKING:
    from diffusers import DDPMScheduler


def make_ddpm_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    """A diffusers DDPM scheduler for this config (epsilon prediction, no x0 clipping: latents)."""
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=config.num_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule=config.beta_schedule,
        variance_type="learned_range" if config.learn_sigma else "fixed_small",
        clip_sample=False,
        prediction_type="epsilon",
        timestep_spacing="linspace",
    )


def space_timesteps(num_timesteps: int, section_counts: str | int | Sequence[int]) -> list[int]:
    """improved-diffusion's ``space_timesteps``: which original steps a respaced sampler visits.

    ``section_counts`` splits [0, num_timesteps) into equal sections and takes that many evenly
    strided steps from each ("100" -> 100 steps including 0 and num_timesteps - 1; "10,15,20"
    -> three sections). ``"ddimN"`` uses DDIM's fixed stride. Returns the steps ascending.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim") :])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(f"cannot create exactly {desired} steps with an integer stride")
        counts = [int(x) for x in section_counts.split(",")]
    elif isinstance(section_counts, int):
        counts = [section_counts]
    else:
        counts = [int(x) for x in section_counts]
    size_per = num_timesteps // len(counts)
    extra = num_timesteps % len(counts)
    start_idx = 0
    steps: list[int] = []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        frac_stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        taken = []
        for _ in range(count):
            taken.append(start_idx + round(cur))
            cur += frac_stride
        steps += taken
        start_idx += size
    return sorted(set(steps))


class GaussianSchedule:
    """Float64 tables of a discrete schedule and the formulas of q(x_t|x_0), q(x_{t-1}|x_t,x_0).

    ``t`` arguments are integer tensors [B] of indices into the schedule (0 = one noise step).
    """

    def __init__(self, betas: Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten().cpu()
        if betas.numel() < 2 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must be a 1-D sequence of at least 2 values in (0, 1]")
        self.betas = betas
        self.num_timesteps = int(betas.numel())
        alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(alphas, 0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The posterior variance is 0 at t = 0; improved-diffusion clips its log by reusing t = 1.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * alphas.sqrt() / (1.0 - self.alphas_cumprod)
        self.log_betas = torch.log(betas)

    @classmethod
    def from_scheduler(cls, scheduler: DDPMScheduler) -> GaussianSchedule:
        return cls(scheduler.betas)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Tensor) -> GaussianSchedule:
        """Betas such that the cumulative product is ``alphas_cumprod`` (improved-diffusion respacing)."""
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        return cls(1.0 - ac / prev)

    def respaced(self, use_timesteps: Sequence[int]) -> GaussianSchedule:
        """The schedule that visits only ``use_timesteps`` (improved-diffusion ``SpacedDiffusion``)."""
        idx = torch.as_tensor(sorted(use_timesteps), dtype=torch.long)
        return GaussianSchedule.from_alphas_cumprod(self.alphas_cumprod[idx])

    # -- per-sample lookups -------------------------------------------------------------------
    @staticmethod
    def extract(table: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """``table[t]`` as ``like``'s dtype/device, shaped [B, 1, 1, ...] to broadcast over ``like``."""
        vals = table[t.detach().to("cpu", torch.long)].to(device=like.device, dtype=like.dtype)
        return vals.reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        return self.extract(self.sqrt_alphas_cumprod, t, x_start) * x_start + self.extract(
            self.sqrt_one_minus_alphas_cumprod, t, x_start
        ) * noise

    def q_posterior_mean_variance(self, x_start: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = self.extract(self.posterior_mean_coef1, t, x_t) * x_start + self.extract(
            self.posterior_mean_coef2, t, x_t
        ) * x_t
        var = self.extract(self.posterior_variance, t, x_t).expand_as(x_t)
        logvar = self.extract(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t)
        return mean, var, logvar

    def predict_xstart_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        return self.extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - self.extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        ) * eps

    def predict_eps_from_xstart(self, x_t: Tensor, t: Tensor, x_start: Tensor) -> Tensor:
        return (self.extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x_start) / self.extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    def learned_range_log_variance(self, var_values: Tensor, t: Tensor) -> Tensor:
        """Model log-variance: ``var_values`` in [-1, 1] interpolates log(posterior var) .. log(beta)."""
        min_log = self.extract(self.posterior_log_variance_clipped, t, var_values)
        max_log = self.extract(self.log_betas, t, var_values)
        frac = (var_values + 1.0) / 2.0
        return frac * max_log + (1.0 - frac) * min_log


def logit_normal_timesteps(
    batch: int, mean: float, std: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """t = sigmoid(N(mean, std)) in (0, 1): Open-Sora 1.2's (SD3's) logit-normal sampling."""
    z = torch.randn(batch, generator=generator, device=_gen_device(generator, device), dtype=torch.float32)
    return torch.sigmoid(mean + std * z).to(device)


def _gen_device(generator: torch.Generator | None, device: torch.device | str) -> torch.device:
    return generator.device if generator is not None else torch.device(device)


def randn(
    shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Standard normal noise from ``generator`` (on its own device), moved to ``device``."""
    return torch.randn(tuple(shape), generator=generator, device=_gen_device(generator, device), dtype=dtype).to(device)


def randint(
    high: int, size: int, generator: torch.Generator | None, device: torch.device | str
) -> Tensor:
    """Uniform integers in [0, high) from ``generator``, moved to ``device``."""
    return torch.randint(0, high, (size,), generator=generator, device=_gen_device(generator, device)).to(device)


def rand(size: int, generator: torch.Generator | None, device: torch.device | str) -> Tensor:
    return torch.rand(size, generator=generator, device=_gen_device(generator, device)).to(device)


LOG2 = math.log(2.0)
