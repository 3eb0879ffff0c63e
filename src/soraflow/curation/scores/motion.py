"""Optical flow on sampled frame pairs: the ``motion`` score and the camera-motion label.

Definitions (all at the working size of :func:`working_size`, short side 256 px by default):

- per pair ``(i, j)``, flow ``F`` from frame ``i`` to frame ``j`` (``j - i = d`` frames);
  a pair where fewer than ``flow_still_fraction`` of the pixels changed by
  ``flow_change_min`` grey levels (5x5 box-filtered) in luma and along the pair's main colour
  axis is still and ``F = 0`` (see :func:`changed_fraction`: estimators otherwise invent
  flow on flat, re-coded areas);
  the pair's value is ``mean over pixels of |F| / d`` (Euclidean magnitude, px per frame);
- ``motion`` = mean of the pair values; ``motion_p90`` = mean of the pairs' 90th percentile
  of ``|F| / d`` (on a 4x4-strided subgrid, like the camera statistics below) (more sensitive to a small moving object on a still background);
- camera per pair: flow in flat regions (farther than ``camera_texture_radius`` px from a
  gradient of ``camera_texture_grad`` grey levels/px) is set to 0 first, since estimators
  fill it in from nearby moving edges; translation ``t`` = per-component median of ``F / d``; zoom rate ``s`` =
  median of the radial component of ``F / d - t`` divided by the radius (pixels at least a
  quarter of the half-diagonal from the centre), reported as ``z = s x mean radius`` (px per
  frame at the mean radius); residual = median ``|F / d - t - s r|``. Label: ``static`` when
  ``max(|t|, |z|) < camera_static_px``; ``complex`` when residual > ``camera_complex_ratio``
  x ``max(|t|, |z|)``; else ``zoom`` if ``|z| > |t|``, ``pan`` if ``|t_x| >= |t_y|``, else
  ``tilt``. The clip label is the majority over pairs.

OpenCV DIS (default) and Farneback run on luma (uint8, converted at source size, then
area-resized); a pair whose luma is still is looked at again along its main colour axis
(:func:`colour_axis`), since luma hides an object of the same luma as its background; RAFT (torchvision) runs when its
weights are given by path, on RGB scaled to [-1, 1].
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from soraflow.curation.scores.config import ScoresConfig

log = logging.getLogger(__name__)

CAMERA_LABELS = ("static", "pan", "tilt", "zoom", "complex")

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def working_size(height: int, width: int, short_side: int, max_long_side: int) -> tuple[int, int]:
    """``(h, w)`` of the flow working frame: short side -> ``short_side``, long side capped.

    Both sides are rounded to a multiple of 8 (RAFT needs it; the same for every method so the
    units do not depend on the method).
    """
    scale = short_side / max(1, min(height, width))
    h, w = height * scale, width * scale
    if h >= w:
        h = min(h, max_long_side)
    else:
        w = min(w, max_long_side)
    return max(8, int(round(h / 8)) * 8), max(8, int(round(w / 8)) * 8)


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    interp = cv2.INTER_AREA if img.shape[0] > h or img.shape[1] > w else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def colour_axis(frames: list[np.ndarray]) -> np.ndarray:
    """``[1, 4]`` affine map RGB -> one channel along the clip's main colour axis.

    Luma makes some objects vanish: the demo's green (30, 180, 40) on gray (120, 120, 120)
    has the same luma (119 vs 120), so grayscale flow sees nothing move. The first principal
    component of the clip's colours (a subsample of the given frames) is the direction of
    largest contrast: the luminance axis on natural footage, the object/background axis on a
    flat scene. Weights are scaled to sum of |w| = 1 and offset so the output spans 0..255.
    """
    samples = []
    for f in frames:
        step = max(1, int(math.sqrt(f.shape[0] * f.shape[1] / 4096)))
        samples.append(f[::step, ::step].reshape(-1, 3))
    x = np.concatenate(samples).astype(np.float32)
    cov = np.cov(x.T) if len(x) > 1 else np.zeros((3, 3))
    if not np.isfinite(cov).all() or np.trace(cov) < 1e-6:
        w = np.array([0.299, 0.587, 0.114])  # a flat clip: any axis will do
    else:
        w = np.linalg.eigh(cov)[1][:, -1]
        w = w if w.sum() >= 0 else -w
        w = w / np.abs(w).sum()
    offset = 255.0 * float(-w[w < 0].sum())
    return np.array([[w[0], w[1], w[2], offset]], dtype=np.float32)


def project(rgb: np.ndarray, axis: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 single channel of ``rgb`` along ``axis`` (see :func:`colour_axis`), at ``size``."""
    return _resize(cv2.transform(rgb, axis), size)


class FlowEstimator:
    """Dense flow between two prepared frames, shape ``[H, W, 2]`` in working-size pixels.

    ``prepare`` gives the estimator's input at the working size: the single channel
    (luma, or the colour-axis projection) for OpenCV, RGB for RAFT. Safe to share between threads: OpenCV flow objects are created per call
    (microseconds), the RAFT module only runs under ``torch.inference_mode``.
    """

    def __init__(self, config: ScoresConfig, raft: Any = None, device: str = "cpu") -> None:
        self.method = config.flow_method
        self.dis_preset = _DIS_PRESETS[config.dis_preset]
        self.raft = raft
        self.raft_iters = config.raft_iters
        self.device = device

    def prepare(self, rgb: np.ndarray, size: tuple[int, int], gray: np.ndarray) -> np.ndarray:
        """Estimator input: ``gray`` (one channel at ``size``) for OpenCV, resized RGB for RAFT."""
        if self.method == "raft":
            return _resize(rgb, size)
        return gray

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.method == "raft":
            return self._raft(a, b)
        if self.method == "farneback":
            return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        dis = cv2.DISOpticalFlow_create(self.dis_preset)
        return dis.calc(a, b, None)

    def _raft(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import torch

        def to_t(x: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()
            return (t / 127.5 - 1.0).to(self.device)

        with torch.inference_mode():
            flows = self.raft(to_t(a), to_t(b), num_flow_updates=self.raft_iters)
        return flows[-1][0].permute(1, 2, 0).float().cpu().numpy()


def load_raft(path: str, arch: str, device: str) -> Any:
    """torchvision RAFT (``raft_small``/``raft_large``) with the state dict at ``path``."""
    import torch
    from torchvision.models import optical_flow

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"curate.scores.raft_weights: file not found: {p}")
    model = getattr(optical_flow, arch)(weights=None, progress=False)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    model.load_state_dict(state)
    return model.eval().to(device)


@dataclass(frozen=True)
class PairMotion:
    mean: float  # mean |F|/d over pixels
    p90: float  # 90th percentile of |F|/d
    tx: float
    ty: float
    zoom: float  # radial rate x mean radius (px/frame), + = zoom in (expanding flow)
    residual: float

    def label(self, static_px: float, complex_ratio: float) -> str:
        trans = math.hypot(self.tx, self.ty)
        mag = max(trans, abs(self.zoom))
        if mag < static_px:
            return "static"
        if self.residual > complex_ratio * mag:
            return "complex"
        if abs(self.zoom) > trans:
            return "zoom"
        return "pan" if abs(self.tx) >= abs(self.ty) else "tilt"


def changed_fraction(gray_a: np.ndarray, gray_b: np.ndarray, change_min: float) -> float:
    """Fraction of pixels whose 5x5 box-filtered grey level changed by ``change_min`` or more.

    The blur keeps isolated coding noise from counting. A pair below
    ``flow_still_fraction`` is still: estimators report flow even there (DIS spread a few
    re-coded pixels over a whole flat gradient: 0.9 px/frame of "motion" on an H.264 pair
    of a still scene whose mean pixel difference was 0.006 grey levels).
    """
    diff = cv2.blur(cv2.absdiff(gray_a, gray_b).astype(np.float32), (5, 5))
    return float(np.count_nonzero(diff >= change_min)) / diff.size


def texture_mask(gray: np.ndarray, grad_min: float, radius: int) -> np.ndarray:
    """Pixels within ``radius`` px of an image gradient >= ``grad_min`` grey levels per px.

    Flow in flat regions is not measured but filled in by the estimator (DIS propagates a
    moving object's flow over a plain background), so it is no evidence of camera motion.
    """
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    strong = (np.hypot(gx, gy) >= 8.0 * grad_min).astype(np.uint8)  # Sobel 3x3 gain is 8
    if radius > 0:
        strong = cv2.dilate(strong, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1)))
    return strong.astype(bool)


def analyse_flow(flow: np.ndarray, gap: int, textured: np.ndarray | None = None, stride: int = 4) -> PairMotion:
    """Statistics of one flow field (``[H, W, 2]``, pixels over ``gap`` frames).

    The mean magnitude uses every pixel; the percentile, medians and zoom fit use a regular
    ``stride`` x ``stride`` subgrid (medians over 65k pixels cost 10x the flow itself). For the
    camera statistics, pixels outside ``textured`` vote for "no motion" (flow 0).

    Magnitudes come from ``np.hypot`` (correctly rounded), not ``cv2.magnitude``: OpenCV's
    IPP kernel is off by one ulp on about a third of the pixels, and which ones depends on the
    buffers' memory alignment, so the same flow gave scores differing in the last digits from
    run to run (and ``clips.parquet`` a different hash for DVC).
    """
    f = flow.astype(np.float32, copy=False)
    mag = np.hypot(f[..., 0], f[..., 1]) / float(gap)
    h, w = mag.shape
    sub = f[stride // 2 :: stride, stride // 2 :: stride] / float(gap)
    if textured is not None:
        sub = sub * textured[stride // 2 :: stride, stride // 2 :: stride, None]
    u, v = sub[..., 0].ravel(), sub[..., 1].ravel()
    tx, ty = float(np.median(u)), float(np.median(v))
    ys, xs = np.meshgrid(
        np.arange(stride // 2, h, stride, dtype=np.float32) - (h - 1) / 2.0,
        np.arange(stride // 2, w, stride, dtype=np.float32) - (w - 1) / 2.0,
        indexing="ij",
    )
    xs, ys = xs.ravel(), ys.ravel()
    r2 = xs * xs + ys * ys
    ru, rv = u - tx, v - ty
    far = r2 >= (0.25 * 0.5 * math.hypot(h, w)) ** 2
    s = float(np.median((ru[far] * xs[far] + rv[far] * ys[far]) / r2[far])) if far.any() else 0.0
    mean_r = float(np.sqrt(r2).mean())
    res = float(np.median(np.hypot(ru - s * xs, rv - s * ys)))
    return PairMotion(
        mean=float(mag.mean()),
        p90=float(np.percentile(mag[stride // 2 :: stride, stride // 2 :: stride], 90)),
        tx=tx,
        ty=ty,
        zoom=s * mean_r,
        residual=res,
    )


def motion_scores(
    frames: list[np.ndarray],
    pairs: list[tuple[int, int]],
    gaps: list[int],
    estimator: FlowEstimator,
    config: ScoresConfig,
) -> dict[str, Any]:
    """``motion``, ``motion_p90``, ``camera_motion`` and the mean camera translation/zoom.

    ``frames`` are RGB uint8 at source size; ``pairs`` index into ``frames``; ``gaps`` are the
    frame distances of the pairs. With no pair (a 1-frame clip) every value is NaN/None.
    """
    empty: dict[str, Any] = {
        "motion": math.nan,
        "motion_p90": math.nan,
        "camera_motion": None,
        "camera_dx": math.nan,
        "camera_dy": math.nan,
        "camera_zoom": math.nan,
    }
    if not pairs:
        return empty
    h0, w0 = frames[0].shape[:2]
    size = working_size(h0, w0, config.flow_short_side, config.flow_max_long_side)
    used = sorted({p for pair in pairs for p in pair})
    lumas = {p: _resize(cv2.cvtColor(frames[p], cv2.COLOR_RGB2GRAY), size) for p in used}
    stats = []
    for (a, b), g in zip(pairs, gaps):
        gray_a, gray_b = lumas[a], lumas[b]
        still = changed_fraction(gray_a, gray_b, config.flow_change_min) < config.flow_still_fraction
        if still:
            # luma may hide an object of the background's luma: look along the pair's main
            # colour axis before calling the pair still (rare; costs ~2 ms when it happens)
            axis = colour_axis([frames[a], frames[b]])
            gray_a, gray_b = project(frames[a], axis, size), project(frames[b], axis, size)
            still = changed_fraction(gray_a, gray_b, config.flow_change_min) < config.flow_still_fraction
        if still:
            flow = np.zeros((*gray_a.shape, 2), np.float32)  # nothing changed: nothing moved
        else:
            flow = estimator(estimator.prepare(frames[a], size, gray_a), estimator.prepare(frames[b], size, gray_b))
        textured = None
        if config.camera_texture_grad > 0:
            textured = texture_mask(gray_a, config.camera_texture_grad, config.camera_texture_radius)
        stats.append(analyse_flow(flow, g, textured))
    labels = [s.label(config.camera_static_px, config.camera_complex_ratio) for s in stats]
    # majority vote; ties go to the label seen first in clip order
    counts = Counter(labels)
    best = max(counts.values())
    label = next(lab for lab in labels if counts[lab] == best)
    return {
        "motion": float(np.mean([s.mean for s in stats])),
        "motion_p90": float(np.mean([s.p90 for s in stats])),
        "camera_motion": label,
        "camera_dx": float(np.mean([s.tx for s in stats])),
        "camera_dy": float(np.mean([s.ty for s in stats])),
        "camera_zoom": float(np.mean([s.zoom for s in stats])),
    }
