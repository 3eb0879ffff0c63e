"""Classifier-free guidance: one model call on a batch doubled with the null caption.

The model signature is fixed (see :mod:`soraflow.diffusion`)::

    model(x, timestep, y, mask=None, x_mask=None, *, height, width, num_frames=None, fps=None, ar=None)

``model_kwargs`` carries ``y`` (caption states [B, L, C]), ``mask`` ([B, L], 1 = real token) and
the micro-conditions. For guidance the batch is doubled: the first half sees the caption, the
second half the null caption; every other tensor argument whose first dimension is B is
repeated. The guided prediction is ``uncond + scale * (cond - uncond)`` on the first
``cfg_channels`` channels of the prediction (all latent channels by default; Open-Sora 1.1
guided 3 of 4), the remaining channels (and the learned variance) are the conditional ones.

``interval`` limits guidance to a band of noise levels (Kynkaanniemi et al. 2024, "Applying
guidance in a limited interval improves sample and distribution quality in diffusion models"):
a step whose timestep, as a fraction of the process's ``num_timesteps`` (1 = pure noise), lies
outside ``[low, high]`` takes the conditional prediction alone, in one undoubled model call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from soraflow.diffusion.config import check_guidance_interval


def combine_cfg(cond: Tensor, uncond: Tensor, scale: float, channels: int) -> Tensor:
    """``cond`` with its first ``channels`` channels replaced by ``uncond + scale * (cond - uncond)``."""
    if channels < 1 or channels > cond.shape[1]:
        raise ValueError(f"cfg channels must be in [1, {cond.shape[1]}], got {channels}")
    guided = cond.clone()
    guided[:, :channels] = uncond[:, :channels] + scale * (cond[:, :channels] - uncond[:, :channels])
    return guided


def _pad_tokens(y: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    extra = length - y.shape[1]
    if extra <= 0:
        return y, mask
    y = torch.cat([y, y.new_zeros(y.shape[0], extra, y.shape[2])], 1)
    return y, torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], 1)  # works for bool masks too


def null_caption_for(model: Any, batch: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """The model's null caption for ``batch`` samples, as ``like``'s dtype and device."""
    fn = getattr(model, "null_caption", None)
    if fn is None:
        raise ValueError("guidance needs y_null: pass it, or give the model a null_caption(batch) method")
    y_null, mask_null = fn(batch)
    return y_null.to(device=like.device, dtype=like.dtype), mask_null.to(like.device)


def double_kwargs(model_kwargs: Mapping[str, Any], y_null: Tensor, mask_null: Tensor | None) -> dict[str, Any]:
    """Model kwargs for the [cond; uncond] batch (captions padded to a common length)."""
    y = model_kwargs["y"]
    batch = y.shape[0]
    mask = model_kwargs.get("mask")
    if mask is None:
        mask = torch.ones(y.shape[:2], dtype=torch.long, device=y.device)
    if mask_null is None:
        mask_null = torch.ones(y_null.shape[:2], dtype=mask.dtype, device=y.device)
    if y_null.shape[0] != batch:
        if y_null.shape[0] != 1:
            raise ValueError(f"y_null has batch {y_null.shape[0]}, expected {batch} or 1")
        y_null = y_null.expand(batch, -1, -1)
        mask_null = mask_null.expand(batch, -1)
    if y_null.shape[2] != y.shape[2]:
        raise ValueError(f"null caption has {y_null.shape[2]} channels, caption has {y.shape[2]}")
    length = max(y.shape[1], y_null.shape[1])
    y, mask = _pad_tokens(y, mask, length)
    y_null, mask_null = _pad_tokens(y_null.to(y.dtype), mask_null.to(mask.dtype), length)
    out: dict[str, Any] = {}
    for key, value in model_kwargs.items():
        if key in ("y", "mask"):
            continue
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch:
            out[key] = torch.cat([value, value], 0)
        else:
            out[key] = value
    out["y"] = torch.cat([y, y_null], 0)
    out["mask"] = torch.cat([mask, mask_null], 0)
    return out


class GuidedDenoiser:
    """Callable ``(x, t, x_mask) -> prediction`` for samplers, with guidance when scale != 1.

    ``x_mask`` is None or [B, T] bool (True = frame being generated). The prediction has the
    model's channels (C or 2C); the first ``cfg_channels`` (default: the C latent channels)
    are guided.
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        model_kwargs: Mapping[str, Any],
        *,
        guidance_scale: float,
        latent_channels: int,
        y_null: Tensor | None = None,
        mask_null: Tensor | None = None,
        cfg_channels: int | None = None,
        interval: tuple[float, float] | None = None,
        num_timesteps: int = 1000,
    ) -> None:
        if "y" not in model_kwargs:
            raise ValueError("model_kwargs needs 'y' (caption states [B, L, C])")
        self.model = model
        self.scale = float(guidance_scale)
        self.channels = cfg_channels or latent_channels
        if self.channels > latent_channels:
            raise ValueError(f"cfg_channels ({cfg_channels}) exceeds the {latent_channels} latent channels")
        self.guided = self.scale != 1.0
        check_guidance_interval(interval)
        self.interval = None if interval is None else (float(interval[0]) * num_timesteps, float(interval[1]) * num_timesteps)
        self.cond_kwargs = self.kwargs = dict(model_kwargs)
        if self.guided:
            y = model_kwargs["y"]
            if y_null is None:
                y_null, mask_null = null_caption_for(model, y.shape[0], y)
            self.kwargs = double_kwargs(model_kwargs, y_null.to(device=y.device, dtype=y.dtype), mask_null)

    def __call__(self, x: Tensor, t: Tensor, x_mask: Tensor | None = None) -> Tensor:
        if not self.guided:
            return self.model(x, t, x_mask=x_mask, **self.kwargs).float()
        guide = None
        if self.interval is not None:  # [B] bool: which samples are guided at their timestep
            tf = t.float()
            guide = (tf >= self.interval[0]) & (tf <= self.interval[1])
            if not bool(guide.any()):
                return self.model(x, t, x_mask=x_mask, **self.cond_kwargs).float()
        x2 = torch.cat([x, x], 0)
        t2 = torch.cat([t, t], 0)
        m2 = None if x_mask is None else torch.cat([x_mask, x_mask], 0)
        out = self.model(x2, t2, x_mask=m2, **self.kwargs).float()
        cond, uncond = out.chunk(2, dim=0)
        guided = combine_cfg(cond, uncond, self.scale, self.channels)
        if guide is None or bool(guide.all()):
            return guided
        return torch.where(guide.reshape(-1, *([1] * (cond.dim() - 1))), guided, cond)
