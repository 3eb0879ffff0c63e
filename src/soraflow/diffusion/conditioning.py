"""Frame conditioning during sampling: which frames are generated at which step.

A sampler gets clean conditioning latents ``x_cond`` [B, C, T, H, W] and a per-frame mask
``x_mask`` [B, T]:

* ``True`` / 1.0: generate the frame from noise (every step);
* ``False`` / 0.0: keep it equal to ``x_cond`` at every step (a conditioning frame; the model
  sees it clean, with the t = 0 modulation, through its ``x_mask`` argument);
* a float r in (0, 1) (an ``edit_ratio``): keep it clean for the first steps, then re-generate
  it during the last ``round(r * steps)`` steps: at its first active step it is noised from
  ``x_cond`` to that step's noise level, then denoised like the other frames (SDEdit).

:func:`activation_steps` turns the mask into the step index at which each frame becomes
active; :class:`FrameConditioner` applies it inside a sampler loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def activation_steps(x_mask: Tensor, num_steps: int) -> Tensor:
    """Step index (0..num_steps) at which each frame starts being generated; num_steps = never.

    ``x_mask`` is [B, T] bool or float in [0, 1] (the fraction of the last steps to generate).
    """
    ratio = x_mask.float()
    if bool(((ratio < 0) | (ratio > 1)).any()):
        raise ValueError("x_mask values must lie in [0, 1] (1 = generate, 0 = keep, r = edit the last r of the steps)")
    n_active = torch.round(ratio * num_steps).long()
    return num_steps - n_active


class FrameConditioner:
    """Keeps conditioning frames clean and starts edited frames at their step.

    Usage in a loop over steps ``i`` with current state ``x``::

        x = cond.before_step(x, i, noise_to_level)   # noise newly active frames, pin the others
        out = model(x, t, x_mask=cond.model_mask(i))
        x = cond.after_step(x_next, i)                # pin frames that are not active yet

    ``noise_to_level(x_clean, i)`` noises clean latents to the input level of step ``i``.
    Without a mask (``x_mask`` None) every method is the identity.
    """

    def __init__(self, x_cond: Tensor | None, x_mask: Tensor | None, num_steps: int) -> None:
        self.enabled = x_mask is not None
        self.num_steps = num_steps
        if not self.enabled:
            if x_cond is not None:
                raise ValueError("x_cond was given without x_mask: say which frames to keep")
            return
        if x_cond is None:
            raise ValueError("x_mask was given without x_cond: the conditioning latents are needed")
        if x_mask.dim() != 2 or x_mask.shape != (x_cond.shape[0], x_cond.shape[2]):
            raise ValueError(f"x_mask must be [B, T] = {(x_cond.shape[0], x_cond.shape[2])}, got {tuple(x_mask.shape)}")
        self.x_cond = x_cond
        self.start = activation_steps(x_mask.to(x_cond.device), num_steps)  # [B, T]

    def active(self, i: int) -> Tensor:
        """[B, T] bool: frames generated at step ``i``."""
        return self.start <= i

    def model_mask(self, i: int) -> Tensor | None:
        """The model's ``x_mask`` at step ``i`` (None when every frame is generated)."""
        if not self.enabled:
            return None
        act = self.active(i)
        return None if bool(act.all()) else act

    @staticmethod
    def _b(mask: Tensor) -> Tensor:
        return mask[:, None, :, None, None]

    def before_step(self, x: Tensor, i: int, noise_to_level: Callable[[Tensor, int], Tensor]) -> Tensor:
        if not self.enabled:
            return x
        fresh = (self.start == i) & (i > 0)
        if bool(fresh.any()):
            x = torch.where(self._b(fresh), noise_to_level(self.x_cond, i).to(x.dtype), x)
        return torch.where(self._b(self.active(i)), x, self.x_cond.to(x.dtype))

    def after_step(self, x: Tensor, i: int) -> Tensor:
        """Pin frames that are not active at step ``i`` back to ``x_cond``."""
        if not self.enabled:
            return x
        return torch.where(self._b(self.active(i)), x, self.x_cond.to(x.dtype))
