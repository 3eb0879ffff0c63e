"""Masked conditioning: training frame masks and inference ``mask_strategy`` (Open-Sora 1.1).

* :class:`MaskGenerator` draws ``x_mask`` [B, T] bool (True = generate) with the nine mask
  types of the original at the configured ratios (``masks.mask_ratios``).
* :func:`parse_mask_strategy` / :func:`apply_mask_strategy` turn the original's
  ``loop_id,ref_id,ref_start,target_start,length,edit_ratio`` strings into the conditioning
  latents and frame mask the samplers take (``x_cond``, ``x_mask``).

Names are imported lazily so that reading the config does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MASK_NAMES": "config",
    "MaskConfig": "config",
    "MaskRatios": "config",
    "MaskGenerator": "generator",
    "FIELDS": "strategy",
    "RECIPES": "strategy",
    "MaskGroup": "strategy",
    "append_loop_reference": "strategy",
    "apply_mask_strategy": "strategy",
    "format_mask_strategy": "strategy",
    "loop_group": "strategy",
    "looped_length": "strategy",
    "parse_mask_strategy": "strategy",
    "stitch_loops": "strategy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"soraflow.masks.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'soraflow.masks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
