"""Loss primitives of the variational bound, as in improved-diffusion (Nichol & Dhariwal 2021).

diffusers' schedulers do not compute training losses, so these few formulas are written here.
All work element-wise; reductions over frames honour a frame mask (only generated frames count).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), element-wise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """The tanh approximation of the standard normal CDF used by improved-diffusion."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: Tensor, *, means: Tensor, log_scales: Tensor) -> Tensor:
    """log-probability of ``x`` under a Gaussian discretised into 256 bins over [-1, 1].

    The edge bins extend to +-infinity, as in improved-diffusion (data below -0.999 take the
    lower tail, above 0.999 the upper tail). ``log_scales`` is the log standard deviation.
    Latents are not uint8 images, but the original applies the same decoder term to them.
    """
    if not (x.shape == means.shape == log_scales.shape):
        raise ValueError(f"shapes differ: x {tuple(x.shape)}, means {tuple(means.shape)}, log_scales {tuple(log_scales.shape)}")
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def mean_flat(tensor: Tensor, frame_mask: Tensor | None = None) -> Tensor:
    """Mean over all non-batch dims; with ``frame_mask`` [B, T] (True = counts) only those frames.

    ``tensor`` is [B, C, T, H, W] when a mask is given. A sample whose mask is all False gets 0
    (not NaN), so a degenerate mask cannot poison a batch.
    """
    if frame_mask is None:
        return tensor.mean(dim=tuple(range(1, tensor.dim())))
    if tensor.dim() != 5 or frame_mask.shape != (tensor.shape[0], tensor.shape[2]):
        raise ValueError(
            f"frame mask {tuple(frame_mask.shape)} does not match tensor {tuple(tensor.shape)} (want [B, T] of [B, C, T, H, W])"
        )
    m = frame_mask.to(tensor.dtype)
    per_frame = tensor.sum(dim=(1, 3, 4))  # [B, T]
    per_elem = tensor.shape[1] * tensor.shape[3] * tensor.shape[4]
    denom = (m.sum(dim=1) * per_elem).clamp(min=1)
    return (per_frame * m).sum(dim=1) / denom


def temporal_difference_mse(error: Tensor, frame_mask: Tensor | None = None) -> Tensor:
    """Mean square of ``error[:, :, t+1] - error[:, :, t]`` per sample ([B, C, T, H, W] -> [B]).

    With ``frame_mask`` [B, T] only pairs of two counted frames enter. A sample with fewer than
    two frames (or no counted pair) gets 0.
    """
    if error.dim() != 5:
        raise ValueError(f"expected [B, C, T, H, W], got {tuple(error.shape)}")
    if error.shape[2] < 2:
        return error.new_zeros(error.shape[0])
    diff = error[:, :, 1:] - error[:, :, :-1]
    pair_mask = None if frame_mask is None else frame_mask[:, 1:] & frame_mask[:, :-1]
    return mean_flat(diff**2, pair_mask)
