"""Parameter and FLOP counts of an STDiT2 for a latent size, without allocating it.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on the **meta**
device: the model is built and run on shape-only tensors. On meta, scaled-dot-product
attention runs its math decomposition (bmm), so attention FLOPs are counted; on a real CPU
the fused attention kernel is not known to FlopCounterMode and would count as zero.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from soraflow.models.config import STDiT2Config
from soraflow.models.stdit2 import STDiT2

__all__ = ["count_flops", "count_parameters", "dummy_inputs"]


def count_parameters(config: STDiT2Config) -> dict[str, int]:
    """``{"total", "trainable", "buffers"}`` for ``config`` (built on meta, no memory)."""
    with torch.device("meta"):
        model = STDiT2(config)
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "buffers": sum(b.numel() for b in model.buffers()),
    }


def dummy_inputs(
    config: STDiT2Config,
    frames: int,
    height: int,
    width: int,
    batch: int = 1,
    caption_len: int | None = None,
    device: torch.device | str = "cpu",
    vae_factor: int = 8,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Random ``(args, kwargs)`` for one forward at latent size ``frames x height x width``."""
    length = caption_len or config.caption_max_length
    x = torch.randn(batch, config.in_channels, frames, height, width, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    y = torch.randn(batch, length, config.caption_channels, device=device)
    kwargs = {
        "height": torch.full((batch,), float(height * vae_factor), device=device),
        "width": torch.full((batch,), float(width * vae_factor), device=device),
        "num_frames": torch.full((batch,), float(frames), device=device),
    }
    return (x, t, y), kwargs


def count_flops(
    config: STDiT2Config,
    frames: int,
    height: int,
    width: int,
    batch: int = 1,
    caption_len: int | None = None,
    backward: bool = False,
) -> dict[str, Any]:
    """FLOPs of one forward (and backward, if asked) at a latent size, counted on meta.

    The adaLN modulation is counted in its textbook (elementwise) form: the folded form
    used for speed adds per-sample ``[C] x [C, C_out]`` products that are not model math.
    Returns ``{"total": int, "by_op": {op: flops}, "device": "meta"}`` for the whole batch.
    """
    with torch.device("meta"):
        model = STDiT2(config)
    model.train(backward)
    model.set_fold_modulation(False)  # count the model's math, not the folding's tiny extra matmuls
    args, kwargs = dummy_inputs(config, frames, height, width, batch, caption_len, device="meta")
    with FlopCounterMode(display=False) as counter:
        out = model(*args, **kwargs)
        if backward:
            out.sum().backward()
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return {"total": int(counter.get_total_flops()), "by_op": by_op, "device": "meta"}
