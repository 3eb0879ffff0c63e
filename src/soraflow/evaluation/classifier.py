"""The in-domain attribute classifier: colour, shape and motion direction of a demo video.

Pretrained Inception/CLIP weights cannot be downloaded here, so the evaluation trains its own
judge on the curated clips. Two small conv trunks:

* appearance, on each frame alone -> per-frame features ``[feature_dim]`` (global average and
  max pooling, so a small object's colour is not washed out by the background); the colour
  and shape heads read them (video logits = mean of frame logits). These per-frame features
  are the FID/KID features on the demo (:class:`FrameFeatureExtractor`);
* motion, on each pair of consecutive frames given as ``(x_t, x_{t+1} - x_t)`` at full
  resolution (a moving edge leaves a signed band in the difference, on the side it moves
  to), averaged over pairs; the direction head (``left/right/up/down/none``) reads it.

Input: uint8 ``[B, T, H, W, 3]`` videos (what the generator returns) or float
``[B, 3, T, H, W]`` in [-1, 1]. A folder holds ``config.json``, ``model.safetensors`` and
``report.json`` (training and held-out accuracies).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from soraflow.threads import torch_threads
from soraflow.evaluation.clips import fixed_windows, random_window
from soraflow.evaluation.prompts import COLOR_LABELS, DIRECTION_LABELS, SHAPE_LABELS

__all__ = [
    "AttributeClassifier",
    "ClassifierSpec",
    "FrameFeatureExtractor",
    "LabelledClip",
    "labelled_clips",
    "accuracy_report",
    "augment_window",
    "load_classifier",
    "predict_videos",
    "save_classifier",
    "to_model_input",
    "train_classifier",
]

log = logging.getLogger(__name__)

ATTRIBUTES = ("color", "shape", "direction")
LABELS = {"color": COLOR_LABELS, "shape": SHAPE_LABELS, "direction": DIRECTION_LABELS}
_SWAP_H = {"left": "right", "right": "left"}
_SWAP_V = {"up": "down", "down": "up"}


@dataclass
class ClassifierSpec:
    """What a saved classifier folder's ``config.json`` holds: architecture and input size."""

    width: int = 24
    feature_dim: int = 64
    num_frames: int = 8
    height: int = 32
    width_px: int = 32
    frame_interval: int = 2
    colors: list[str] = field(default_factory=lambda: list(COLOR_LABELS))
    shapes: list[str] = field(default_factory=lambda: list(SHAPE_LABELS))
    directions: list[str] = field(default_factory=lambda: list(DIRECTION_LABELS))


def _appearance_trunk(cin: int, width: int) -> nn.Sequential:
    """Full-resolution 3x3 conv, then two stride-2 stages: ``[N, cin, H, W] -> [N, 2w, H/4, W/4]``."""
    w2 = 2 * width
    return nn.Sequential(
        nn.Conv2d(cin, width, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(width, w2, 3, stride=2, padding=1),
        nn.GroupNorm(4 if w2 % 4 == 0 else 1, w2),
        nn.GELU(),
        nn.Conv2d(w2, w2, 3, stride=2, padding=1),
        nn.GELU(),
        nn.Conv2d(w2, w2, 3, padding=1),
        nn.GELU(),
    )


def _motion_trunk(width: int) -> nn.Sequential:
    """A 5x5 stride-2 conv reads the full-resolution pair (a 1-2 pixel shift is visible), then
    one more stride-2 stage: ``[N, 6, H, W] -> [N, 2w, H/4, W/4]``."""
    w2 = 2 * width
    return nn.Sequential(
        nn.Conv2d(6, width, 5, stride=2, padding=2),
        nn.GELU(),
        nn.Conv2d(width, w2, 3, stride=2, padding=1),
        nn.GroupNorm(4 if w2 % 4 == 0 else 1, w2),
        nn.GELU(),
        nn.Conv2d(w2, w2, 3, padding=1),
        nn.GELU(),
    )


def _pool(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def to_model_input(videos: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, T, H, W, 3]`` (or ``[T, H, W, 3]``) -> float ``[B, 3, T, H, W]`` in [-1, 1];
    float tensors ``[B, 3, T, H, W]`` pass through."""
    if isinstance(videos, np.ndarray):
        videos = torch.from_numpy(np.ascontiguousarray(videos))
    if videos.dtype == torch.uint8:
        if videos.ndim == 4:
            videos = videos[None]
        if videos.ndim != 5 or videos.shape[-1] != 3:
            raise ValueError(f"expected uint8 videos [B, T, H, W, 3], got {tuple(videos.shape)}")
        return videos.permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"expected float videos [B, 3, T, H, W], got {tuple(videos.shape)}")
    return videos.float()


class AttributeClassifier(nn.Module):
    """Colour head on per-frame appearance, shape head on the per-frame silhouette, direction
    head on pair motion."""

    def __init__(self, spec: ClassifierSpec | None = None):
        super().__init__()
        self.spec = spec or ClassifierSpec()
        w, f = self.spec.width, self.spec.feature_dim
        # Object-colour maps: how close each pixel is to each object colour of the vocabulary
        # (the demo keeps backgrounds far from every object colour). Their maximum is the
        # object's silhouette, whatever its colour and background: the shape head reads only
        # that, so shape generalises from a few dozen clips instead of memorising backgrounds.
        from soraflow.demo.vocab import COLORS

        palette = torch.tensor([COLORS[c] for c in self.spec.colors], dtype=torch.float32)
        self.register_buffer("palette", palette.view(1, -1, 3, 1, 1), persistent=False)
        self.appearance = _appearance_trunk(3 + len(self.spec.colors), w)
        self.silhouette = _appearance_trunk(1, w)
        self.appearance_proj = nn.Sequential(nn.Linear(8 * w, f), nn.GELU())
        self.silhouette_proj = nn.Sequential(nn.Linear(4 * w, f), nn.GELU())
        self.motion = _motion_trunk(w)
        self.motion_proj = nn.Sequential(nn.Linear(4 * w, f), nn.GELU())
        self.color_head = nn.Linear(f, len(self.spec.colors))
        self.shape_head = nn.Linear(f, len(self.spec.shapes))
        self.direction_head = nn.Linear(f, len(self.spec.directions))

    @property
    def num_features(self) -> int:
        """Width of the per-frame features (what FID/KID compare)."""
        return self.spec.feature_dim

    def colour_maps(self, frames: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [-1, 1] -> ``[N, K, H, W]``: ``1 - distance / 100`` (RGB units, clamped
        at 0) to each of the K object colours."""
        rgb = (frames + 1.0) * 127.5
        dist = (rgb[:, None] - self.palette).square().sum(dim=2).add(1e-6).sqrt()
        return (1.0 - dist / 100.0).clamp_min(0.0)

    def _frame_branches(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(frame features ``[N, F]``, shape features ``[N, F]``)."""
        maps = self.colour_maps(frames)
        sil = _pool(self.silhouette(maps.amax(dim=1, keepdim=True)))
        app = _pool(self.appearance(torch.cat([frames, maps], dim=1)))
        return self.appearance_proj(torch.cat([app, sil], dim=1)), self.silhouette_proj(sil)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [-1, 1] -> ``[N, feature_dim]`` (appearance and silhouette)."""
        return self._frame_branches(frames)[0]

    def motion_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` -> ``[B, feature_dim]`` (mean over consecutive pairs; zeros for T = 1)."""
        b, c, t, h, w = x.shape
        if t < 2:
            pairs = torch.cat([x[:, :, :1], torch.zeros_like(x[:, :, :1])], dim=1)
            t_pairs = 1
        else:
            pairs = torch.cat([x[:, :, :-1], x[:, :, 1:] - x[:, :, :-1]], dim=1)
            t_pairs = t - 1
        pairs = pairs.permute(0, 2, 1, 3, 4).reshape(b * t_pairs, 2 * c, h, w)
        feats = self.motion_proj(_pool(self.motion(pairs)))
        return feats.reshape(b, t_pairs, -1).mean(dim=1)

    def forward(self, x: torch.Tensor, appearance_frames: int | None = None) -> dict[str, torch.Tensor]:
        """``{"color", "shape", "direction"}`` video logits, plus ``frame_color`` ``[B, T', C]``
        and ``features`` (per-frame features ``[B, T', F]``).

        ``appearance_frames``: read colour and shape from that many random frames only (a
        training shortcut: they do not change over a clip); default all ``T``.
        """
        x = to_model_input(x)
        b, c, t, h, w = x.shape
        xa = x
        if appearance_frames is not None and appearance_frames < t:
            keep = torch.randperm(t)[:appearance_frames].sort().values
            xa = x[:, :, keep]
        ta = xa.shape[2]
        frames = xa.permute(0, 2, 1, 3, 4).reshape(b * ta, c, h, w)
        ff, sf = self._frame_branches(frames)
        frame_color = self.color_head(ff).reshape(b, ta, -1)
        frame_shape = self.shape_head(sf).reshape(b, ta, -1)
        return {
            "color": frame_color.mean(dim=1),
            "shape": frame_shape.mean(dim=1),
            "direction": self.direction_head(self.motion_features(x)),
            "frame_color": frame_color,
            "features": ff.reshape(b, ta, -1),
        }


class FrameFeatureExtractor(nn.Module):
    """The classifier's per-frame features as a torchmetrics FID/KID feature extractor.

    Takes uint8 images ``[N, 3, H, W]`` (torchmetrics' convention); ``num_features`` tells
    torchmetrics the width without a dummy forward pass. Features are scaled to norm
    ``sqrt(num_features)`` (about 1 per dimension): a fixed map, so FID stays a distance
    between distributions, but KID's cubic kernel ``(x.y / d + 1)^3`` stays well conditioned
    whatever the raw scale the training happened to give the features.
    """

    def __init__(self, classifier: AttributeClassifier):
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = classifier.num_features

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div(127.5).sub(1.0)
        if images.shape[-2:] != (self.classifier.spec.height, self.classifier.spec.width_px):
            images = F.interpolate(
                images, size=(self.classifier.spec.height, self.classifier.spec.width_px), mode="bilinear",
                align_corners=False, antialias=True,
            )
        f = self.classifier.frame_features(images)
        return f * (self.num_features**0.5 / f.norm(dim=1, keepdim=True).clamp_min(1e-8))


# ----------------------------------------------------------------------------- data


@dataclass
class LabelledClip:
    """Decoded frames ``[N, H, W, 3]`` uint8 with the caption's labels (direction None: a still)."""

    frames: np.ndarray
    color: str
    shape: str
    direction: str | None


def labelled_clips(table: Any, frames: list[np.ndarray]) -> list[LabelledClip]:
    """:class:`LabelledClip` per row of a table with ``color``/``shape``/``direction`` columns
    (:func:`soraflow.evaluation.prompts.with_attributes`); a missing direction becomes None."""
    out = []
    for f, (color, shape, direction) in zip(frames, zip(table["color"], table["shape"], table["direction"])):
        out.append(LabelledClip(f, str(color), str(shape), direction if isinstance(direction, str) else None))
    return out


def augment_window(
    window: np.ndarray, clip: LabelledClip, rng: np.random.Generator, *, hflip: float, vflip: float, reverse: float, freeze: float
) -> tuple[np.ndarray, str]:
    """Flip/reverse/freeze a window ``[T, H, W, 3]`` and move its direction label with it."""
    direction = clip.direction or "none"
    if clip.direction is None or rng.random() < freeze:
        window = window[[int(rng.integers(len(window)))] * len(window)]
        direction = "none"
    if rng.random() < hflip:
        window = window[:, :, ::-1]
        direction = _SWAP_H.get(direction, direction)
    if clip.shape != "triangle" and rng.random() < vflip:
        window = window[:, ::-1]
        direction = _SWAP_V.get(direction, direction)
    if rng.random() < reverse:
        window = window[::-1]
        direction = _SWAP_H.get(direction, _SWAP_V.get(direction, direction))
    return np.ascontiguousarray(window), direction


def _label_tensor(values: list[str], labels: tuple[str, ...] | list[str]) -> torch.Tensor:
    return torch.tensor([list(labels).index(v) for v in values], dtype=torch.long)


def _clip_weights(clips: list[LabelledClip]) -> np.ndarray:
    """Sampling weights that balance the direction classes (a still image counts as ``none``)."""
    dirs = [c.direction or "none" for c in clips]
    counts = {d: dirs.count(d) for d in set(dirs)}
    w = np.array([1.0 / counts[d] for d in dirs])
    return w / w.sum()


# ----------------------------------------------------------------------------- predict


@torch.no_grad()
def predict_videos(
    model: AttributeClassifier, videos: np.ndarray | torch.Tensor, batch_size: int = 64
) -> dict[str, Any]:
    """Predicted labels of uint8 videos ``[B, T, H, W, 3]``.

    Returns ``{"color", "shape", "direction": list[str], "frame_color": list[list[str]],
    "features": [B, T, F] tensor}``.
    """
    model.eval()
    out: dict[str, list] = {"color": [], "shape": [], "direction": [], "frame_color": [], "features": []}
    spec = model.spec
    n = len(videos)
    for i in range(0, n, batch_size):
        x = to_model_input(videos[i : i + batch_size])
        if x.shape[-2:] != (spec.height, spec.width_px):
            b, c, t, h, w = x.shape
            x = F.interpolate(
                x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), size=(spec.height, spec.width_px),
                mode="bilinear", align_corners=False, antialias=True,
            ).reshape(b, t, c, spec.height, spec.width_px).permute(0, 2, 1, 3, 4)
        logits = model(x)
        out["color"] += [spec.colors[j] for j in logits["color"].argmax(1).tolist()]
        out["shape"] += [spec.shapes[j] for j in logits["shape"].argmax(1).tolist()]
        out["direction"] += [spec.directions[j] for j in logits["direction"].argmax(1).tolist()]
        out["frame_color"] += [[spec.colors[j] for j in row] for row in logits["frame_color"].argmax(2).tolist()]
        out["features"].append(logits["features"])
    out["features"] = torch.cat(out["features"]) if out["features"] else torch.zeros(0)
    return out


def accuracy_report(pred: dict[str, Any], truth: dict[str, list[str]]) -> dict[str, float]:
    """``{attr}_accuracy`` for each attribute present in ``truth`` (direction None rows skipped)."""
    report = {}
    for attr in ATTRIBUTES:
        if attr not in truth:
            continue
        pairs = [(p, t) for p, t in zip(pred[attr], truth[attr]) if t is not None]
        report[f"{attr}_accuracy"] = float(np.mean([p == t for p, t in pairs])) if pairs else math.nan
    return report


# ----------------------------------------------------------------------------- train


def train_classifier(
    train_clips: list[LabelledClip],
    val_clips: list[LabelledClip],
    spec: ClassifierSpec,
    *,
    epochs: int,
    windows_per_clip: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 1e-4,
    hflip: float = 0.5,
    vflip: float = 0.5,
    reverse: float = 0.5,
    freeze: float = 0.1,
    val_windows_per_clip: int = 4,
    appearance_frames: int | None = 2,
    threads: int | None = 1,
    seed: int = 0,
    progress: bool = True,
) -> tuple[AttributeClassifier, dict[str, Any]]:
    """Train on random augmented windows of ``train_clips``; report accuracy on fixed windows
    of ``val_clips`` (no augmentation). Returns ``(model, report)``.

    The report has ``train_*`` and ``val_*`` accuracies (``val_*`` NaN without validation
    clips), the number of clips, steps and seconds, and per-class validation counts.
    """
    if not train_clips:
        raise ValueError("no training clip for the attribute classifier")
    with torch_threads(threads):
        return _train(
            train_clips, val_clips, spec, epochs=epochs, windows_per_clip=windows_per_clip, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, aug={"hflip": hflip, "vflip": vflip, "reverse": reverse, "freeze": freeze},
            val_windows_per_clip=val_windows_per_clip, appearance_frames=appearance_frames, seed=seed, progress=progress,
        )


def _train(train_clips, val_clips, spec, *, epochs, windows_per_clip, batch_size, lr, weight_decay, aug,
           val_windows_per_clip, appearance_frames, seed, progress) -> tuple[AttributeClassifier, dict[str, Any]]:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = AttributeClassifier(spec)
    steps_per_epoch = max(1, math.ceil(len(train_clips) * windows_per_clip / batch_size))
    total = epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    weights = _clip_weights(train_clips)
    model.train()
    running: dict[str, float] = {}
    bar = tqdm(range(total), desc="eval classifier", disable=not progress, mininterval=1.0)
    for step in bar:
        picks = rng.choice(len(train_clips), size=batch_size, p=weights)
        windows, colors, shapes, dirs = [], [], [], []
        for k in picks:
            clip = train_clips[int(k)]
            win = random_window(clip.frames, spec.num_frames, spec.frame_interval, rng)
            win, d = augment_window(win, clip, rng, **aug)
            windows.append(win)
            colors.append(clip.color)
            shapes.append(clip.shape)
            dirs.append(d)
        x = to_model_input(np.stack(windows))
        logits = model(x, appearance_frames=appearance_frames)
        targets = {
            "color": _label_tensor(colors, spec.colors),
            "shape": _label_tensor(shapes, spec.shapes),
            "direction": _label_tensor(dirs, spec.directions),
        }
        losses = {a: F.cross_entropy(logits[a], targets[a]) for a in ATTRIBUTES}
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        for a in ATTRIBUTES:
            acc = float((logits[a].argmax(1) == targets[a]).float().mean())
            running[a] = acc if step == 0 else 0.9 * running[a] + 0.1 * acc
        if step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", **{a[:3]: f"{running[a]:.2f}" for a in ATTRIBUTES}, refresh=False)
    bar.close()
    model.eval()
    report: dict[str, Any] = {f"train_{a}_accuracy_ema": running[a] for a in ATTRIBUTES}
    report.update(evaluate_on_clips(model, val_clips, val_windows_per_clip, prefix="val_"))
    report.update(
        {
            "train_clips": len(train_clips),
            "val_clips": len(val_clips),
            "steps": total,
            "seconds": time.perf_counter() - t0,
        }
    )
    return model, report


def evaluate_on_clips(
    model: AttributeClassifier,
    clips: list[LabelledClip],
    windows_per_clip: int,
    prefix: str = "",
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Accuracies of ``model`` on fixed windows of labelled clips (directions of stills skipped).
    ``transform`` maps each clip's windows ``[N, T, H, W, 3]`` uint8 before they are classified
    (e.g. a VAE's encode -> decode)."""
    if not clips:
        return {f"{prefix}{a}_accuracy": math.nan for a in ATTRIBUTES} | {f"{prefix}windows": 0}
    spec = model.spec
    videos, truth = [], {a: [] for a in ATTRIBUTES}
    for c in clips:
        wins = fixed_windows(c.frames, spec.num_frames, spec.frame_interval, windows_per_clip)
        if transform is not None:
            wins = transform(wins)
        videos.append(wins)
        truth["color"] += [c.color] * len(wins)
        truth["shape"] += [c.shape] * len(wins)
        truth["direction"] += [c.direction] * len(wins)
    pred = predict_videos(model, np.concatenate(videos))
    acc = accuracy_report(pred, truth)
    out: dict[str, Any] = {f"{prefix}{k}": v for k, v in acc.items()}
    out[f"{prefix}windows"] = len(truth["color"])
    return out


# ----------------------------------------------------------------------------- io


def save_classifier(model: AttributeClassifier, folder: str | Path, report: dict[str, Any] | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` (and ``report.json``) into ``folder``.

    The report's wall time (``seconds``) stays out of the folder: the same training must write the
    same bytes, or DVC sees a new ``models/eval_classifier`` after every re-run and redoes every
    stage after it (the time goes to metrics/eval_classifier.json and MLflow).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(asdict(model.spec), indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    if report is not None:
        kept = {k: v for k, v in report.items() if k != "seconds"}
        (folder / "report.json").write_text(json.dumps(kept, indent=2, sort_keys=True, default=float))
    return folder


def load_classifier(folder: str | Path, device: str | torch.device = "cpu") -> AttributeClassifier:
    """A classifier saved by :func:`save_classifier` (eval mode)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{folder}: no attribute classifier here (config.json + model.safetensors); "
            "run `soraflow eval-classifier` (the eval_classifier stage) first"
        )
    spec = ClassifierSpec(**json.loads((folder / "config.json").read_text()))
    model = AttributeClassifier(spec)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.to(device).eval()


def read_report(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "report.json"
    return json.loads(path.read_text()) if path.is_file() else {}
