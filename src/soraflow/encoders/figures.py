"""Pictures for MLflow: original frames above their VAE reconstructions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _to_image(frame: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[3, H, W]`` float in [-1, 1] or ``[H, W, 3]`` uint8 -> ``[H, W, 3]`` float in [0, 1]."""
    a = frame.detach().cpu().float().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if a.ndim != 3:
        raise ValueError(f"expected one frame, got shape {a.shape}")
    if a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    return np.clip((a.astype(np.float32) + 1.0) / 2.0, 0.0, 1.0)


def reconstruction_figure(
    originals: Sequence | torch.Tensor,
    recons: Sequence | torch.Tensor,
    max_items: int = 8,
    title: str | None = None,
):
    """A matplotlib ``Figure``: originals on the top row, reconstructions below, with each
    pair's PSNR. Frames are ``[3, H, W]`` floats in [-1, 1] or ``[H, W, 3]`` uint8."""
    # A bare Figure (no pyplot): no global backend state, safe in worker threads.
    from matplotlib.figure import Figure

    from soraflow.encoders.vae_train import psnr

    n = min(len(originals), len(recons), max_items)
    if n == 0:
        raise ValueError("no frames to show")
    fig = Figure(figsize=(1.6 * n + 0.8, 3.6), dpi=100)
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        a, b = _to_image(originals[i]), _to_image(recons[i])
        value = float(psnr(torch.from_numpy(b)[None] * 2, torch.from_numpy(a)[None] * 2)) if a.shape == b.shape else float("nan")
        axes[0, i].imshow(a, interpolation="nearest")
        axes[1, i].imshow(b, interpolation="nearest")
        axes[1, i].set_xlabel(f"{value:.1f} dB", fontsize=8)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("original")
    axes[1, 0].set_ylabel("reconstruction")
    fig.suptitle(title or "VAE reconstructions (held-out frames)", fontsize=10)
    fig.tight_layout()
    return fig
