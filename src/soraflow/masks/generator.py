"""Training masks: per sample, draw one of nine conditioning tasks and mark its frames.

The mask is ``x_mask`` [B, T] bool, True = frame to generate (in the loss), False =
conditioning frame (kept almost clean, t = 0 modulation, out of the loss). Images (T = 1) are
never masked. Differences from the original, which crashed or masked every frame on short
clips: a "quarter" is k in [1, max(1, T // 4)] frames, and a type that cannot leave at least
one frame to generate (head+tail on T = 2) falls back to ``identity``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from soraflow.config_base import ConfigError
from soraflow.masks.config import MASK_NAMES, MaskRatios


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high] (inclusive, like random.randint)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


class MaskGenerator:
    """Draws training masks with the configured type ratios from a ``torch.Generator``."""

    def __init__(self, ratios: MaskRatios | Mapping[str, float] | None = None) -> None:
        if ratios is None:
            ratios = MaskRatios()
        elif not isinstance(ratios, MaskRatios):
            unknown = sorted(set(ratios) - set(MASK_NAMES))
            if unknown:
                raise ConfigError(f"masks.mask_ratios: unknown mask type(s) {unknown}; known: {list(MASK_NAMES)}")
            full = {name: 0.0 for name in MASK_NAMES}
            full.update({k: float(v) for k, v in ratios.items()})
            try:
                ratios = MaskRatios(**full)
            except ValueError as err:
                raise ConfigError(f"masks.mask_ratios: {err}") from None
        self.ratios = ratios.as_dict()
        self._names = list(self.ratios)
        self._cum = torch.cumsum(torch.tensor([self.ratios[n] for n in self._names], dtype=torch.float64), 0)

    def draw_type(self, generator: torch.Generator | None = None) -> str:
        u = float(torch.rand(1, generator=generator, dtype=torch.float64).item())
        idx = int(torch.searchsorted(self._cum, torch.tensor([u], dtype=torch.float64), right=True).item())
        return self._names[min(idx, len(self._names) - 1)]

    @staticmethod
    def mask_for(name: str, num_frames: int, generator: torch.Generator | None = None) -> tuple[Tensor, str]:
        """The [T] bool mask of type ``name`` and the type actually applied (fallbacks)."""
        if name not in MASK_NAMES:
            raise ValueError(f"unknown mask type {name!r}; known: {list(MASK_NAMES)}")
        mask = torch.ones(num_frames, dtype=torch.bool)
        if num_frames <= 1 or name == "identity":
            return mask, "identity"
        quarter = max(1, num_frames // 4)
        kind, _, where = name.partition("_")
        if where == "head_tail":
            k_max = quarter if kind == "quarter" else 1
            k_max = min(k_max, (num_frames - 1) // 2)
            if k_max < 1:
                return mask, "identity"
            k = _randint(1, k_max, generator) if kind == "quarter" else 1
            mask[:k] = False
            mask[-k:] = False
            return mask, name
        k = _randint(1, quarter, generator) if kind == "quarter" else 1
        if where == "random":
            pos = _randint(0, num_frames - k, generator)
            mask[pos : pos + k] = False
        elif where == "head":
            mask[:k] = False
        else:  # tail
            mask[-k:] = False
        return mask, name

    def sample(
        self,
        batch: int,
        num_frames: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, list[str]]:
        """``x_mask`` [B, T] bool (True = generate) and the mask type of each sample."""
        masks, names = [], []
        for _ in range(batch):
            drawn = self.draw_type(generator)
            mask, applied = self.mask_for(drawn, num_frames, generator)
            masks.append(mask)
            names.append(applied)
        return torch.stack(masks).to(device or "cpu"), names
