"""IDDPM (Open-Sora 1.1): epsilon prediction, learned-range variance, hybrid loss, two samplers.

Training loss (improved-diffusion's ``RESCALED_MSE`` with ``LEARNED_RANGE`` variance)::

    loss = mean((eps - eps_model)^2) + vb * num_timesteps / 1000
    vb   = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))   in bits/dim, t > 0
         = -log p(x_0|x_1) (discretised Gaussian)     in bits/dim, t = 0

with p's mean computed from the DETACHED eps prediction, so the bound trains only the
variance. With a frame mask (``x_mask`` [B, T], True = generate) conditioning frames are
noised at t = 0 (``q_sample(x_0, 0)``: almost clean, std 0.01) instead of t, the model is told
which frames they are, and both terms average over generated frames only.

Sampling reuses diffusers: :class:`~diffusers.DDPMScheduler` with ``learned_range`` on the
respaced steps of improved-diffusion's ``space_timesteps`` (ancestral), and
:class:`~diffusers.DPMSolverMultistepScheduler` (DPM-Solver++, order 2, eps channels only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from soraflow.diffusion.conditioning import FrameConditioner
from soraflow.diffusion.config import DEFAULT_STEPS, SAMPLERS_BY_TYPE, DiffusionConfig
from soraflow.diffusion.guidance import GuidedDenoiser
from soraflow.diffusion.losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from soraflow.diffusion.schedule import LOG2, GaussianSchedule, make_ddpm_scheduler, randint, randn, space_timesteps

if TYPE_CHECKING:
    from diffusers import DPMSolverMultistepScheduler

logger = logging.getLogger(__name__)

Model = Callable[..., Tensor]


def _model_kwargs(model_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(model_kwargs or {})
    kwargs.pop("x_mask", None)  # the diffusion owns the frame mask
    return kwargs


def _check_frame_mask(x_mask: Tensor | None, x: Tensor) -> Tensor | None:
    if x_mask is None:
        return None
    if x_mask.shape != (x.shape[0], x.shape[2]):
        raise ValueError(f"x_mask must be [B, T] = {(x.shape[0], x.shape[2])}, got {tuple(x_mask.shape)}")
    return x_mask.to(device=x.device, dtype=torch.bool)


def eval_timesteps(num_timesteps: int, num: int = 10) -> list[float]:
    """Open-Sora 1.2's evaluation timesteps: ``num`` points evenly inside (0, num_timesteps)."""
    return torch.linspace(0, num_timesteps, num + 2)[1:-1].tolist()


class IDDPM:
    """Gaussian diffusion with learned-range variance; see the module docstring."""

    type = "iddpm"

    def __init__(self, config: DiffusionConfig | None = None) -> None:
        self.config = config or DiffusionConfig()
        if self.config.type != "iddpm":
            raise ValueError(f"IDDPM needs diffusion.type 'iddpm', got {self.config.type!r}")
        self.scheduler = make_ddpm_scheduler(self.config)
        self.schedule = GaussianSchedule.from_scheduler(self.scheduler)
        self.num_timesteps = self.config.num_timesteps
        self.learn_sigma = self.config.learn_sigma

    # -- forward process ----------------------------------------------------------------------
    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor, x_mask: Tensor | None = None) -> Tensor:
        """x_t; with ``x_mask`` (True = generate) the other frames are noised at t = 0 instead."""
        x_t = self.schedule.q_sample(x_start, t, noise)
        x_mask = _check_frame_mask(x_mask, x_start)
        if x_mask is not None:
            x_t0 = self.schedule.q_sample(x_start, torch.zeros_like(t), noise)
            x_t = torch.where(x_mask[:, None, :, None, None], x_t, x_t0)
        return x_t

    def sample_timesteps(self, batch: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """Uniform training timesteps in [0, num_timesteps)."""
        return randint(self.num_timesteps, batch, generator, device)

    # -- loss ---------------------------------------------------------------------------------
    def vb_terms(
        self, x_start: Tensor, x_t: Tensor, t: Tensor, eps: Tensor, var_values: Tensor, x_mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The variational-bound term in bits/dim per sample (not yet rescaled).

        Returns ``vb`` [B] (KL where t > 0, decoder NLL where t = 0), and the pieces ``kl``,
        ``nll`` [B], ``model_mean``, ``model_log_variance``. ``eps`` should already be detached
        when used for training (the caller decides).
        """
        s = self.schedule
        true_mean, _, true_logvar = s.q_posterior_mean_variance(x_start, x_t, t)
        model_logvar = s.learned_range_log_variance(var_values, t)
        pred_xstart = s.predict_xstart_from_eps(x_t, t, eps)
        model_mean, _, _ = s.q_posterior_mean_variance(pred_xstart, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_logvar, model_mean, model_logvar), x_mask) / LOG2
        nll = -discretized_gaussian_log_likelihood(x_start, means=model_mean, log_scales=0.5 * model_logvar)
        nll = mean_flat(nll, x_mask) / LOG2
        vb = torch.where(t == 0, nll, kl)
        return {"vb": vb, "kl": kl, "nll": nll, "model_mean": model_mean, "model_log_variance": model_logvar}

    def training_losses(
        self,
        model: Model,
        x_start: Tensor,
        model_kwargs: Mapping[str, Any] | None = None,
        x_mask: Tensor | None = None,
        noise: Tensor | None = None,
        t: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Hybrid loss per sample: ``{"loss", "mse", "vb" (learned sigma only), "t"}``, each [B].

        ``x_start`` [B, C, T, H, W] clean latents; ``x_mask`` [B, T] bool (True = generated
        frame, counted in the loss; False = conditioning frame, noised at t = 0); ``noise`` and
        ``t`` default to draws from ``generator``.
        """
        x_start = x_start.float()
        batch, channels = x_start.shape[:2]
        device = x_start.device
        x_mask = _check_frame_mask(x_mask, x_start)
        if t is None:
            t = self.sample_timesteps(batch, generator, device)
        t = torch.as_tensor(t, device=device).float().round().long().reshape(-1).expand(batch)
        if noise is None:
            noise = randn(x_start.shape, generator, device)
        x_t = self.q_sample(x_start, t, noise, x_mask)
        out = model(x_t, t, x_mask=x_mask, **_model_kwargs(model_kwargs)).float()
        if out.shape[2:] != x_start.shape[2:] or out.shape[1] not in (channels, 2 * channels):
            raise ValueError(f"model returned {tuple(out.shape)} for input {tuple(x_start.shape)} (want C or 2C channels)")
        terms: dict[str, Tensor] = {"t": t}
        eps = out[:, :channels]
        terms["mse"] = mean_flat((noise - eps) ** 2, x_mask)
        if self.learn_sigma:
            if out.shape[1] != 2 * channels:
                raise ValueError(f"learn_sigma is on but the model returned {out.shape[1]} channels, not {2 * channels}")
            vb = self.vb_terms(x_start, x_t, t, eps.detach(), out[:, channels:], x_mask)["vb"]
            terms["vb"] = vb * (self.num_timesteps / 1000.0)
            terms["loss"] = terms["mse"] + terms["vb"]
        else:
            terms["loss"] = terms["mse"]
        return terms

    def eval_timesteps(self, num: int = 10) -> list[int]:
        return [int(round(v)) for v in eval_timesteps(self.num_timesteps, num)]

    @torch.no_grad()
    def loss_at_timesteps(
        self,
        model: Model,
        x_start: Tensor,
        model_kwargs: Mapping[str, Any] | None = None,
        timesteps: Sequence[float] | None = None,
        noise: Tensor | None = None,
        x_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Loss [K, B] at each of K fixed timesteps (default: 10, as Open-Sora 1.2 evaluated).

        The same ``noise`` is used at every timestep, so bands differ only by the noise level.
        """
        timesteps = list(timesteps) if timesteps is not None else self.eval_timesteps()
        if noise is None:
            noise = randn(x_start.shape, generator, x_start.device)
        rows = []
        for tv in timesteps:
            t = torch.full((x_start.shape[0],), float(tv), device=x_start.device)
            rows.append(self.training_losses(model, x_start, model_kwargs, x_mask=x_mask, noise=noise, t=t)["loss"])
        return torch.stack(rows)

    # -- sampling -----------------------------------------------------------------------------
    def sampling_timesteps(self, steps: int, sampler: str = "iddpm") -> list[int]:
        """The original timesteps a sampler visits, descending."""
        if sampler == "iddpm":
            return sorted(space_timesteps(self.num_timesteps, str(steps)), reverse=True)
        sched = self._dpm_scheduler()
        sched.set_timesteps(steps)
        return [int(v) for v in sched.timesteps]

    def _dpm_scheduler(self) -> DPMSolverMultistepScheduler:
        # Built from explicit values: from_config(ddpm config) would inherit learned_range and
        # then slice channels wrongly (STACK-NOTES); we hand it the eps channels only.
        from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler

        c = self.config
        return DPMSolverMultistepScheduler(
            num_train_timesteps=c.num_timesteps,
            beta_start=c.beta_start,
            beta_end=c.beta_end,
            beta_schedule=c.beta_schedule,
            algorithm_type="dpmsolver++",
            solver_order=2,
            prediction_type="epsilon",
            variance_type=None,
            timestep_spacing="linspace",
            lower_order_final=True,
        )

    @torch.no_grad()
    def sample(
        self,
        model: Model,
        shape: Sequence[int],
        model_kwargs: Mapping[str, Any],
        *,
        y_null: Tensor | None = None,
        mask_null: Tensor | None = None,
        guidance_scale: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        x_cond: Tensor | None = None,
        x_mask: Tensor | None = None,
        cfg_channels: int | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Generate latents [B, C, T, H, W]; see :func:`soraflow.diffusion.build_diffusion`.

        ``steps`` defaults to ``diffusion.sampling_steps`` when ``sampler`` is the configured one,
        else to the sampler's default (iddpm 100, dpm-solver 20).
        """
        sampler = sampler or self.config.resolved_sampler
        if sampler not in SAMPLERS_BY_TYPE["iddpm"]:
            raise ValueError(f"IDDPM samples with {list(SAMPLERS_BY_TYPE['iddpm'])}, not {sampler!r}")
        steps = steps or (self.config.sampling_steps if sampler == self.config.resolved_sampler else None) or DEFAULT_STEPS[sampler]
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        device = model_kwargs["y"].device
        shape = tuple(shape)
        channels = shape[1]
        x = noise.to(device).float() if noise is not None else randn(shape, generator, device)
        denoise = GuidedDenoiser(
            model,
            _model_kwargs(model_kwargs),
            guidance_scale=scale,
            latent_channels=channels,
            y_null=y_null,
            mask_null=mask_null,
            cfg_channels=cfg_channels if cfg_channels is not None else self.config.cfg_channels,
            interval=self.config.guidance_interval,
            num_timesteps=self.num_timesteps,
        )
        timesteps = self.sampling_timesteps(steps, sampler)
        cond = FrameConditioner(None if x_cond is None else x_cond.to(device).float(), x_mask, len(timesteps))

        def noise_to_level(x_clean: Tensor, i: int) -> Tensor:
            t = torch.full((shape[0],), timesteps[i], device=device, dtype=torch.long)
            return self.schedule.q_sample(x_clean, t, randn(shape, generator, device))

        if sampler == "iddpm":
            sched = type(self.scheduler).from_config(self.scheduler.config)
            sched.set_timesteps(timesteps=timesteps)
        else:
            sched = self._dpm_scheduler()
            sched.set_timesteps(len(timesteps))
        loop = tqdm(list(enumerate(timesteps)), desc=f"{sampler} sampling", disable=not progress)
        for i, tv in loop:
            x = cond.before_step(x, i, noise_to_level)
            t = torch.full((shape[0],), tv, device=device, dtype=torch.long)
            out = denoise(x, t, cond.model_mask(i))
            if sampler == "iddpm":
                if not self.learn_sigma:
                    out = out[:, :channels]
                x = sched.step(out, tv, x, generator=generator).prev_sample
            else:
                eps = out[:, :channels]
                if cond.enabled:
                    # Frames held clean get the eps that predicts exactly x_cond, so the solver's
                    # multistep history stays consistent when an edited frame starts later.
                    ab = self.schedule.extract(self.schedule.alphas_cumprod, t, x)
                    eps_hold = (x - ab.sqrt() * cond.x_cond) / (1.0 - ab).sqrt()
                    eps = torch.where(cond.active(i)[:, None, :, None, None], eps, eps_hold)
                x = sched.step(eps, tv, x).prev_sample
            x = cond.after_step(x, i)
        return x
