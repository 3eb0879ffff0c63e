"""Metric functions of the evaluation: sample quality, temporal proxies, image-to-video, accuracy.

All take uint8 videos ``[B, T, H, W, 3]`` (what the generator returns) or per-frame features,
and return plain floats, so they are testable on rendered demo frames without any model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from soraflow.demo.vocab import COLORS

__all__ = [
    "accuracy",
    "confusion_table",
    "fid_kid",
    "flicker",
    "frame_consistency",
    "frames_of",
    "frechet_distance",
    "object_speed",
    "psnr",
]


def frames_of(videos: np.ndarray) -> torch.Tensor:
    """uint8 videos ``[B, T, H, W, 3]`` (or frames ``[N, H, W, 3]``) -> uint8 images ``[N, 3, H, W]``."""
    arr = np.asarray(videos)
    if arr.ndim == 5:
        arr = arr.reshape(-1, *arr.shape[2:])
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 videos [B, T, H, W, 3] or frames [N, H, W, 3], got {arr.shape} {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()


def _update(metric, images: torch.Tensor, real: bool, batch_size: int) -> None:
    for i in range(0, len(images), batch_size):
        metric.update(images[i : i + batch_size], real=real)


def frechet_distance(extractor: nn.Module, real: np.ndarray, fake: np.ndarray, batch_size: int = 256) -> float:
    """FID (torchmetrics) between two sets of frames, with ``extractor`` as the feature network."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real_t, fake_t = frames_of(real), frames_of(fake)
    if len(real_t) < 2 or len(fake_t) < 2:
        raise ValueError(f"FID needs at least 2 frames per side (got {len(real_t)} real, {len(fake_t)} generated)")
    # Feature sums and covariances are accumulated in float64 by torchmetrics; set_dtype would
    # also cast the extractor (a shared module) to float64, so it is not called.
    fid = FrechetInceptionDistance(feature=extractor, normalize=False)
    _update(fid, real_t, True, batch_size)
    _update(fid, fake_t, False, batch_size)
    return float(fid.compute())


def fid_kid(
    extractor: nn.Module,
    real: np.ndarray,
    fake: np.ndarray,
    *,
    kid_subset_size: int = 50,
    kid_subsets: int = 50,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, float]:
    """``{"fid", "kid_mean", "kid_std"}`` between real and generated frames.

    KID's subset size is capped by the smaller side (KID is unbiased, FID is not: compare FIDs
    only between sets of equal sizes). Its random subsets are drawn from ``seed`` (torchmetrics
    draws them from the global RNG, which is left as it was), so the same frames give the same KID.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    out = {"fid": frechet_distance(extractor, real, fake, batch_size)}
    real_t, fake_t = frames_of(real), frames_of(fake)
    subset = int(min(kid_subset_size, len(real_t), len(fake_t)))
    with warnings.catch_warnings():  # "will save all extracted features": a few thousand frames at most here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=extractor, subsets=kid_subsets, subset_size=subset, normalize=False)
    _update(kid, real_t, True, batch_size)
    _update(kid, fake_t, False, batch_size)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mean, std = kid.compute()
    out["kid_mean"], out["kid_std"] = float(mean), float(std)
    return out


def flicker(videos: np.ndarray) -> np.ndarray:
    """Per video: mean absolute difference of consecutive frames, in [0, 1] (0 for one frame)."""
    v = np.asarray(videos, dtype=np.float32) / 255.0
    if v.ndim != 5:
        raise ValueError(f"expected videos [B, T, H, W, 3], got {v.shape}")
    if v.shape[1] < 2:
        return np.zeros(v.shape[0], np.float32)
    return np.abs(np.diff(v, axis=1)).mean(axis=(1, 2, 3, 4))


def frame_consistency(features: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per video: mean cosine similarity of consecutive frames' features ``[B, T, F]`` (1 for one frame)."""
    f = torch.as_tensor(features, dtype=torch.float32)
    if f.ndim != 3:
        raise ValueError(f"expected features [B, T, F], got {tuple(f.shape)}")
    if f.shape[1] < 2:
        return np.ones(f.shape[0], np.float32)
    cos = torch.nn.functional.cosine_similarity(f[:, 1:], f[:, :-1], dim=-1, eps=1e-8)
    return cos.mean(dim=1).numpy()


def object_speed(videos: np.ndarray, colors: Sequence[str], max_distance: float = 80.0) -> np.ndarray:
    """Per video: median displacement (pixels per frame) of the object's centroid.

    The object is found by colour: pixels within ``max_distance`` (RGB) of the prompt's object
    colour (the demo keeps backgrounds far from every object colour). The median over frame
    pairs ignores the jump when an object wraps around the frame. NaN when the object is
    missing from most frames.
    """
    v = np.asarray(videos, dtype=np.float32)
    out = np.full(len(v), np.nan, np.float32)
    ys, xs = np.mgrid[0 : v.shape[2], 0 : v.shape[3]]
    for i, (video, color) in enumerate(zip(v, colors)):
        target = np.asarray(COLORS[color], np.float32)
        mask = np.linalg.norm(video - target, axis=-1) < max_distance  # [T, H, W]
        area = mask.sum(axis=(1, 2))
        ok = area >= 2
        if ok.sum() < max(2, len(video) // 2):
            continue
        cx = np.where(ok, (mask * xs).sum(axis=(1, 2)) / np.maximum(area, 1), np.nan)
        cy = np.where(ok, (mask * ys).sum(axis=(1, 2)) / np.maximum(area, 1), np.nan)
        step = np.hypot(np.diff(cx), np.diff(cy))
        step = step[np.isfinite(step)]
        if len(step):
            out[i] = float(np.median(step))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images/videos of the same shape (inf when identical)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"PSNR needs equal shapes, got {a.shape} and {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def accuracy(predicted: Sequence[str], actual: Sequence[str | None]) -> float:
    """Fraction of equal labels, over rows whose actual label is known (NaN when none)."""
    pairs = [(p, a) for p, a in zip(predicted, actual) if isinstance(a, str)]
    return float(np.mean([p == a for p, a in pairs])) if pairs else math.nan


def confusion_table(predicted: Sequence[str], actual: Sequence[str], labels: Sequence[str]) -> pd.DataFrame:
    """Counts ``[actual x predicted]`` over ``labels`` (rows: actual)."""
    table = pd.DataFrame(0, index=pd.Index(list(labels), name="actual"), columns=pd.Index(list(labels), name="predicted"))
    for p, a in zip(predicted, actual):
        if a in table.index and p in table.columns:
            table.loc[a, p] += 1
    return table
