"""One factory for the noise process, like DiT's ``create_diffusion``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from soraflow.diffusion.config import DiffusionConfig
from soraflow.diffusion.iddpm import IDDPM
from soraflow.diffusion.rflow import RectifiedFlow


class Diffusion(Protocol):
    """What training, evaluation and sampling call; both :class:`IDDPM` and
    :class:`RectifiedFlow` satisfy it."""

    type: str
    num_timesteps: int
    config: DiffusionConfig

    def training_losses(
        self,
        model: Any,
        x_start: Tensor,
        model_kwargs: Mapping[str, Any] | None = None,
        x_mask: Tensor | None = None,
        noise: Tensor | None = None,
        t: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]: ...

    def loss_at_timesteps(
        self,
        model: Any,
        x_start: Tensor,
        model_kwargs: Mapping[str, Any] | None = None,
        timesteps: Sequence[float] | None = None,
        noise: Tensor | None = None,
        x_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...

    def eval_timesteps(self, num: int = 10) -> list: ...

    def sample(
        self,
        model: Any,
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
    ) -> Tensor: ...


def build_diffusion(config: DiffusionConfig | None = None) -> IDDPM | RectifiedFlow:
    """The diffusion for ``config`` (default: Open-Sora 1.1's IDDPM).

    The returned object has:

    ``training_losses(model, x_start, model_kwargs, x_mask=None, noise=None, t=None, generator=None)``
        -> ``{"loss": [B], "mse": [B], "vb": [B] (IDDPM with learned sigma), "t": [B]}``.
        ``x_start`` [B, C, T, H, W] clean latents; ``model_kwargs`` the model's keyword
        arguments (``y``, ``mask``, ``height``, ``width``, ``num_frames``, ``fps``, ``ar``);
        ``x_mask`` [B, T] bool, True = frame to generate (in the loss), False = conditioning
        frame (kept (almost) clean, out of the loss). Average ``loss`` for the step.
    ``loss_at_timesteps(model, x_start, model_kwargs, timesteps=None, noise=None, x_mask=None, generator=None)``
        -> [K, B] loss at K fixed timesteps (default ``eval_timesteps(10)``).
    ``sample(model, shape, model_kwargs, *, y_null=None, mask_null=None, guidance_scale=None,
    steps=None, sampler=None, generator=None, noise=None, x_cond=None, x_mask=None,
    cfg_channels=None, progress=False)`` -> latents [B, C, T, H, W].
        Defaults come from the config (sampler, steps, guidance scale, cfg channels). The null
        caption defaults to ``model.null_caption(B)``; guidance 1.0 skips the unconditional
        pass. ``x_cond`` (clean latents, reference frames in place) with ``x_mask`` [B, T]
        (bool, or float edit ratios from :func:`soraflow.masks.apply_mask_strategy`) keeps
        conditioning frames clean at every step. Same ``generator`` seed => same output.
    """
    config = config or DiffusionConfig()
    if config.type == "iddpm":
        return IDDPM(config)
    if config.type == "rflow":
        return RectifiedFlow(config)
    raise ValueError(f"unknown diffusion type {config.type!r}")
