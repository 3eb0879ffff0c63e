"""Rectified flow (Open-Sora 1.2's choice), with the same model signature and frame masks.

Time runs over [0, num_timesteps]: ``x_t = (1 - t/T) x_0 + (t/T) noise`` (t = 0 clean, t = T
pure noise). The model predicts the velocity ``x_0 - noise`` in its first C channels (a 2C
output, as a learned-sigma model gives, is accepted and its second half ignored). Training
timesteps are logit-normal (``sigmoid(N(mean, std)) * T``) or uniform, optionally shifted
towards noise for larger/longer inputs (Open-Sora 1.2's ``timestep_transform``). Conditioning
frames are kept clean (t = 0 is exactly clean here) and excluded from the loss. Sampling is
Euler from t = T to 0 in ``steps`` uniform steps (shifted the same way), with guidance.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from soraflow.diffusion.conditioning import FrameConditioner
from soraflow.diffusion.config import DEFAULT_STEPS, DiffusionConfig
from soraflow.diffusion.guidance import GuidedDenoiser
from soraflow.diffusion.iddpm import Model, _check_frame_mask, _model_kwargs, eval_timesteps
from soraflow.diffusion.losses import mean_flat, temporal_difference_mse
from soraflow.diffusion.schedule import logit_normal_timesteps, rand, randn

logger = logging.getLogger(__name__)


def _per_sample(value: Any, batch: int, device: torch.device, name: str) -> Tensor:
    if value is None:
        raise ValueError(f"the rectified-flow resolution shift needs model_kwargs[{name!r}] (pixels)")
    return torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1).expand(batch)


class RectifiedFlow:
    """Rectified flow; see the module docstring."""

    type = "rflow"

    def __init__(self, config: DiffusionConfig | None = None) -> None:
        self.config = config or DiffusionConfig(type="rflow")
        if self.config.type != "rflow":
            raise ValueError(f"RectifiedFlow needs diffusion.type 'rflow', got {self.config.type!r}")
        self.num_timesteps = self.config.num_timesteps
        self.options = self.config.rflow

    def add_noise(self, x_start: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        tau = (t.float() / self.num_timesteps).reshape(-1, *([1] * (x_start.dim() - 1)))
        return (1.0 - tau) * x_start + tau * noise

    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor, x_mask: Tensor | None = None) -> Tensor:
        """x_t; frames with ``x_mask`` False are left clean (x_start)."""
        x_t = self.add_noise(x_start, noise, t)
        x_mask = _check_frame_mask(x_mask, x_start)
        if x_mask is not None:
            x_t = torch.where(x_mask[:, None, :, None, None], x_t, x_start)
        return x_t

    def shift(self, t: Tensor, model_kwargs: Mapping[str, Any] | None, num_frames: int) -> Tensor:
        """Open-Sora 1.2's timestep transform when ``rflow.resolution_shift`` is on, else ``t``.

        ratio = sqrt(H W / base_pixels) * sqrt(T / base_frames) * scale (H, W in pixels from
        ``model_kwargs``; T latent frames); t' = ratio t / (1 + (ratio - 1) t), t in [0, 1].
        """
        o = self.options
        if not o.resolution_shift:
            return t
        kwargs = model_kwargs or {}
        batch = t.shape[0]
        h = _per_sample(kwargs.get("height"), batch, t.device, "height")
        w = _per_sample(kwargs.get("width"), batch, t.device, "width")
        ratio = (h * w / o.shift_base_pixels).sqrt() * (num_frames / o.shift_base_frames) ** 0.5 * o.shift_scale
        tau = t.float() / self.num_timesteps
        return ratio * tau / (1.0 + (ratio - 1.0) * tau) * self.num_timesteps

    def sample_timesteps(
        self,
        batch: int,
        generator: torch.Generator | None,
        device: torch.device,
        model_kwargs: Mapping[str, Any] | None = None,
        num_frames: int = 1,
    ) -> Tensor:
        """Training timesteps in (0, T): logit-normal or uniform, then the optional shift."""
        o = self.options
        if o.timestep_sampling == "logit-normal":
            tau = logit_normal_timesteps(batch, o.logit_mean, o.logit_std, generator, device)
        else:
            tau = rand(batch, generator, device)
        return self.shift(tau * self.num_timesteps, model_kwargs, num_frames)

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
        """Velocity MSE per sample: ``{"loss", "mse", "t"}``, each [B] (no ``vb``); with
        ``rflow.temporal_loss_weight`` also ``"temporal"`` (added to ``loss`` with that weight)."""
        x_start = x_start.float()
        batch, channels = x_start.shape[:2]
        device = x_start.device
        x_mask = _check_frame_mask(x_mask, x_start)
        if t is None:
            t = self.sample_timesteps(batch, generator, device, model_kwargs, x_start.shape[2])
        t = torch.as_tensor(t, device=device).float().reshape(-1).expand(batch)
        if noise is None:
            noise = randn(x_start.shape, generator, device)
        x_t = self.q_sample(x_start, t, noise, x_mask)
        out = model(x_t, t, x_mask=x_mask, **_model_kwargs(model_kwargs)).float()
        if out.shape[2:] != x_start.shape[2:] or out.shape[1] not in (channels, 2 * channels):
            raise ValueError(f"model returned {tuple(out.shape)} for input {tuple(x_start.shape)} (want C or 2C channels)")
        error = out[:, :channels] - (x_start - noise)
        mse = mean_flat(error**2, x_mask)
        terms = {"loss": mse, "mse": mse, "t": t}
        if self.options.temporal_loss_weight > 0:
            terms["temporal"] = temporal_difference_mse(error, x_mask)
            terms["loss"] = mse + self.options.temporal_loss_weight * terms["temporal"]
        return terms

    def eval_timesteps(self, num: int = 10) -> list[float]:
        return eval_timesteps(self.num_timesteps, num)

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
        """Velocity MSE [K, B] at each of K fixed timesteps (unshifted; same noise for all; no
        temporal term, so figures compare across ``temporal_loss_weight`` settings)."""
        timesteps = list(timesteps) if timesteps is not None else self.eval_timesteps()
        if noise is None:
            noise = randn(x_start.shape, generator, x_start.device)
        rows = []
        for tv in timesteps:
            t = torch.full((x_start.shape[0],), float(tv), device=x_start.device)
            rows.append(self.training_losses(model, x_start, model_kwargs, x_mask=x_mask, noise=noise, t=t)["mse"])
        return torch.stack(rows)

    def sampling_timesteps(self, steps: int, model_kwargs: Mapping[str, Any] | None, batch: int, num_frames: int, device: torch.device) -> list[Tensor]:
        """Euler timesteps [B] each, from T down (exclusive of 0), shifted if configured."""
        out = []
        for i in range(steps):
            t = torch.full((batch,), (1.0 - i / steps) * self.num_timesteps, device=device)
            out.append(self.shift(t, model_kwargs, num_frames))
        return out

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
        """Euler sampling of latents [B, C, T, H, W]; see :func:`soraflow.diffusion.build_diffusion`."""
        sampler = sampler or "euler"
        if sampler != "euler":
            raise ValueError(f"rectified flow samples with 'euler', not {sampler!r}")
        steps = steps or self.config.sampling_steps or DEFAULT_STEPS["euler"]
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        device = model_kwargs["y"].device
        shape = tuple(shape)
        batch, channels, frames = shape[0], shape[1], shape[2]
        kwargs = _model_kwargs(model_kwargs)
        x = noise.to(device).float() if noise is not None else randn(shape, generator, device)
        denoise = GuidedDenoiser(
            model,
            kwargs,
            guidance_scale=scale,
            latent_channels=channels,
            y_null=y_null,
            mask_null=mask_null,
            cfg_channels=cfg_channels if cfg_channels is not None else self.config.cfg_channels,
            interval=self.config.guidance_interval,
            num_timesteps=self.num_timesteps,
        )
        timesteps = self.sampling_timesteps(steps, kwargs, batch, frames, device)
        cond = FrameConditioner(None if x_cond is None else x_cond.to(device).float(), x_mask, steps)

        def noise_to_level(x_clean: Tensor, i: int) -> Tensor:
            return self.add_noise(x_clean, randn(shape, generator, device), timesteps[i])

        for i in tqdm(range(steps), desc="euler sampling", disable=not progress):
            t = timesteps[i]
            x = cond.before_step(x, i, noise_to_level)
            v = denoise(x, t, cond.model_mask(i))[:, :channels]
            t_next = timesteps[i + 1] if i + 1 < steps else torch.zeros_like(t)
            dt = ((t - t_next) / self.num_timesteps).reshape(-1, 1, 1, 1, 1)
            x = cond.after_step(x + v * dt, i)
        return x
