"""Noise processes for training and sampling: IDDPM (Open-Sora 1.1) and rectified flow (1.2).

The diffusion knows nothing of attention; it calls the model through one signature::

    model(x, timestep, y, mask=None, x_mask=None, *, height, width, num_frames=None, fps=None, ar=None) -> Tensor
    model.null_caption(batch) -> (y_null [B, L, C], mask [B, L])      # for guidance

``x`` [B, C, T, H, W] latents, ``timestep`` [B], ``y`` [B, L, C] caption states, ``mask`` [B, L]
(1 = real token), ``x_mask`` [B, T] bool (True = frame being generated). The model returns
[B, 2C, ...] when it learns the variance (IDDPM), else [B, C, ...].

Entry point: :func:`build_diffusion` (see its docstring for the API). Names are imported
lazily so that reading the config (``soraflow.diffusion.config``) does not load torch/diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DiffusionConfig": "config",
    "RFlowConfig": "config",
    "FrameConditioner": "conditioning",
    "activation_steps": "conditioning",
    "Diffusion": "factory",
    "build_diffusion": "factory",
    "GuidedDenoiser": "guidance",
    "combine_cfg": "guidance",
    "IDDPM": "iddpm",
    "eval_timesteps": "iddpm",
    "RectifiedFlow": "rflow",
    "GaussianSchedule": "schedule",
    "space_timesteps": "schedule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"soraflow.diffusion.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'soraflow.diffusion' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
