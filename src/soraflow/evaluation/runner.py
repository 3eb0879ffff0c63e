"""The ``evaluate`` stage as one library call: :func:`run_evaluation` (and its parts).

What is measured (keys of ``metrics/eval.json``):

* prompt following on held-out prompts (:mod:`soraflow.evaluation.prompts`):
  ``color_accuracy``, ``shape_accuracy``, ``direction_accuracy`` of the attribute classifier
  on generated videos, with ``*_chance`` (1 / classes) and the classifier's own accuracy on
  real held-out clips (``classifier_real_*``: the measurement ceiling) and on the same clips after
  the VAE's encode -> decode (``classifier_vae_*``: the ceiling the VAE sets for any generator);
* sample quality on frames, with the classifier's per-frame features (or CLIP's): ``fid``
  (generated videos of the half-A prompts vs the real clips of half B) beside
  ``fid_real_halves`` (the real clips of half A vs those of half B, the same frame counts), so
  a generator as good as the data scores ``fid`` close to ``fid_real_halves``; ``kid_mean`` /
  ``kid_std`` and ``fid_same_prompts`` (all generated vs the real clips of the same prompts);
  ``clipsim`` when CLIP weights are configured;
* ``heldout_loss`` (diffusion loss on the cached held-out latents at 10 fixed timesteps) with
  ``heldout_loss_tNNN`` per timestep and ``heldout_loss_<bucket>`` per bucket;
* temporal proxies: ``flicker`` (mean absolute frame difference), ``frame_consistency``
  (cosine similarity of consecutive frames' features), ``motion_magnitude_moving`` /
  ``motion_magnitude_still`` (object speed in px/frame for moving vs standing-still prompts),
  each with a ``*_real`` reference measured the same way on real held-out windows;
* image-to-video: ``i2v_first_frame_psnr`` (first generated frame vs the conditioning image
  after the VAE round trip) and ``i2v_color_kept`` (fraction of generated frames whose
  classifier colour is the reference clip's object colour), with ``i2v_color_kept_real`` (the
  same on the reference clip's own frames: the ceiling of a per-frame colour judgement), and
  ``i2v_direction_accuracy`` (the generated clip moves as the prompt says, with the object's
  start given) beside ``i2v_direction_accuracy_real`` (the classifier on the reference clips).

A metric that cannot be measured is left out and the reason is logged and kept in
``EvalReport.notes``; no number is ever made up.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from soraflow.evaluation.classifier import (
    ATTRIBUTES,
    AttributeClassifier,
    ClassifierSpec,
    FrameFeatureExtractor,
    evaluate_on_clips,
    labelled_clips,
    load_classifier,
    predict_videos,
    save_classifier,
    train_classifier,
)
from soraflow.evaluation.clips import fixed_windows, load_clips
from soraflow.evaluation.heldout_loss import HeldoutLoss, heldout_loss
from soraflow.evaluation.metrics import (
    accuracy,
    confusion_table,
    fid_kid,
    flicker,
    frame_consistency,
    frechet_distance,
    object_speed,
    psnr,
)
from soraflow.evaluation.prompts import (
    COLOR_LABELS,
    DIRECTION_LABELS,
    SHAPE_LABELS,
    chance_levels,
    select_heldout_prompts,
    with_attributes,
)
from soraflow.threads import torch_threads

__all__ = [
    "EvalReport",
    "eval_size",
    "evaluate_model",
    "quick_prompt_following",
    "quick_prompts",
    "run_evaluation",
    "sampling_options",
    "train_eval_classifier",
    "write_outputs",
]

log = logging.getLogger(__name__)

I2V_MASK_STRATEGY = "0"  # reference 0's first frame at frame 0 (Open-Sora 1.1's image-to-video)


# ----------------------------------------------------------------------------- settings


def eval_size(params) -> tuple[int, int, int]:
    """``(num_frames, height, width)``: the ``eval`` section's, else the ``sample`` section's."""
    cfg, sample = params.eval, getattr(params, "sample", None)

    def pick(name: str, default: int) -> int:
        v = getattr(cfg, name)
        if v is None and sample is not None:
            v = getattr(sample, name, None)
        return int(v if v is not None else default)

    return pick("num_frames", 8), pick("height", 32), pick("width", 32)


def sampling_options(params) -> dict[str, Any]:
    """``steps``/``sampler``/``guidance`` for the generator: ``eval``'s, else ``sample``'s, else None
    (the model's diffusion config)."""
    cfg, sample = params.eval, getattr(params, "sample", None)
    out = {}
    for name in ("steps", "sampler", "guidance"):
        v = getattr(cfg, name)
        if v is None and sample is not None:
            v = getattr(sample, name, None)
        out[name] = v
    return out


def _clip_table(params) -> pd.DataFrame:
    path = Path(params.curate.output) / "clips.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no curated clip table (run the `curate` stage first)")
    return with_attributes(pd.read_parquet(path))


def _augmented_captions(params) -> list[str]:
    """Training captions the feature cache added by augmentation (mirrored / reversed windows):
    the model trained on them, so they are never held-out prompts."""
    index = Path(params.features.output) / "index.parquet"
    if not index.is_file():
        return []
    rows = pd.read_parquet(index)
    if "augment" not in rows.columns:
        return []
    rows = rows[(rows["split"] == "train") & (rows["augment"] != "")]
    return sorted(set(rows["text"].astype(str)))


def _kind(table: pd.DataFrame) -> pd.Series:
    return table["kind"] if "kind" in table.columns else pd.Series("video", index=table.index)


# ----------------------------------------------------------------------------- classifier


def train_eval_classifier(params, *, progress: bool = True, save: bool = True) -> tuple[AttributeClassifier, dict[str, Any]]:
    """Train the attribute classifier on the curated TRAIN clips (videos and stills) at the
    evaluation size, validate on the HELD-OUT video clips, save to ``eval.classifier.output``."""
    cfg = params.eval.classifier
    t, h, w = eval_size(params)
    table = _clip_table(params)
    train_rows = table[table["split"] == "train"]
    val_rows = table[(table["split"] == "heldout") & (_kind(table) == "video") & table["direction"].notna()]
    if train_rows.empty:
        raise ValueError(f"{params.curate.output}/clips.parquet: no training clip with a demo caption for the classifier")
    spec = ClassifierSpec(
        width=cfg.width, feature_dim=cfg.feature_dim, num_frames=t, height=h, width_px=w,
        frame_interval=params.buckets.frame_interval,
    )
    train_clips = labelled_clips(train_rows, load_clips(train_rows, h, w, progress=progress, desc="decode train clips"))
    val_clips = labelled_clips(val_rows, load_clips(val_rows, h, w, progress=progress, desc="decode held-out clips"))
    model, report = train_classifier(
        train_clips, val_clips, spec,
        epochs=cfg.epochs, windows_per_clip=cfg.windows_per_clip, batch_size=cfg.batch_size, lr=cfg.lr,
        weight_decay=cfg.weight_decay, hflip=cfg.hflip, vflip=cfg.vflip, reverse=cfg.reverse, freeze=cfg.freeze,
        val_windows_per_clip=cfg.val_windows_per_clip, threads=cfg.threads, seed=cfg.seed, progress=progress,
    )
    report["train_directions"] = {
        str(k): int(v) for k, v in train_rows["direction"].fillna("still image").value_counts().items()
    }
    log.info(
        "attribute classifier: held-out accuracy colour %.3f, shape %.3f, direction %.3f (%d clips, %.0f s)",
        report["val_color_accuracy"], report["val_shape_accuracy"], report["val_direction_accuracy"],
        report["val_clips"], report["seconds"],
    )
    if save:
        save_classifier(model, cfg.output, report)
    return model, report


# ----------------------------------------------------------------------------- generation


def _generate(generator, prompts: list[str], *, size: tuple[int, int, int], options: dict[str, Any], seed: int, batch_size: int,
              progress: bool = False, desc: str = "generate", shard: tuple[int, int] = (0, 1),
              gather: Callable[[Any], list[Any]] | None = None) -> np.ndarray:
    """Videos for ``prompts`` in batches of ``batch_size``; batch ``k`` is drawn with seed ``seed + k``.

    ``shard = (rank, world)`` splits the batches over ``world`` processes (this one makes batches
    ``rank, rank + world, ...``) and ``gather`` (an all-gather of Python objects over them) brings
    them together: every process returns all videos, the same ones one process would make, since
    each batch keeps its own seed.
    """
    from tqdm.auto import tqdm

    t, h, w = size
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard {shard}: rank must be in [0, world)")
    if world > 1 and gather is None:
        raise ValueError("generating over several processes needs gather")
    starts = list(range(0, len(prompts), batch_size))
    mine = list(range(rank, len(starts), world))
    made: dict[int, np.ndarray] = {}
    for k in tqdm(mine, desc=desc, disable=not progress, mininterval=1.0):
        i = starts[k]
        made[k] = generator.generate(
            prompts[i : i + batch_size], num_frames=t, height=h, width=w, seed=seed + k,
            steps=options.get("steps"), sampler=options.get("sampler"), guidance=options.get("guidance"),
        )
    if world > 1:
        made = {k: v for part in gather(made) for k, v in part.items()}
    missing = sorted(set(range(len(starts))) - set(made))
    if missing:
        raise RuntimeError(f"batches {missing} of {len(starts)} were generated by no process")
    return np.concatenate([made[k] for k in range(len(starts))])


def quick_prompts(params, num_prompts: int = 8) -> list[str]:
    """Held-out prompts for :func:`quick_prompt_following` during training (the same rule as
    the evaluation: never a training caption; unseen attribute combinations first)."""
    table = _clip_table(params)
    return select_heldout_prompts(table, num_prompts, params.eval.seed, _augmented_captions(params))["prompt"].tolist()


def quick_prompt_following(
    generator,
    classifier: AttributeClassifier,
    prompts: list[str],
    *,
    num_frames: int,
    height: int,
    width: int,
    samples_per_prompt: int = 1,
    steps: int | None = None,
    sampler: str | None = None,
    guidance: float | None = None,
    seed: int = 0,
    batch_size: int = 16,
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[Any], list[Any]] | None = None,
) -> dict[str, float]:
    """Cheap prompt following for training curves: ``color_accuracy``, ``shape_accuracy``,
    ``direction_accuracy`` (and ``*_chance``) of ``classifier`` on videos generated for
    ``prompts`` (demo captions; those that do not parse are an error).

    ``shard``/``gather`` share the generation over processes (see :func:`_generate`): every
    process returns the scores one process alone would compute."""
    from soraflow.evaluation.prompts import parse_caption

    attrs = [parse_caption(p) for p in prompts]
    rep = [p for p in prompts for _ in range(samples_per_prompt)]
    truth = [a for a in attrs for _ in range(samples_per_prompt)]
    videos = _generate(
        generator, rep, size=(num_frames, height, width),
        options={"steps": steps, "sampler": sampler, "guidance": guidance}, seed=seed, batch_size=batch_size,
        shard=shard, gather=gather,
    )
    pred = predict_videos(classifier, videos)
    out = {
        "color_accuracy": accuracy(pred["color"], [a.color for a in truth]),
        "shape_accuracy": accuracy(pred["shape"], [a.shape for a in truth]),
        "direction_accuracy": accuracy(pred["direction"], [a.direction for a in truth]),
    }
    out.update(chance_levels())
    out = {k: v for k, v in out.items() if math.isfinite(v)}
    out["num_videos"] = float(len(videos))
    return out


# ----------------------------------------------------------------------------- report


@dataclass
class EvalReport:
    """Everything the stage measured; :meth:`finite_metrics` is what ``eval.json`` holds."""

    metrics: dict[str, float] = field(default_factory=dict)
    prompts: pd.DataFrame | None = None
    #: One row per generated video: prompt, sample, half, true and predicted labels, temporal proxies.
    predictions: pd.DataFrame | None = None
    videos: np.ndarray | None = None
    loss: HeldoutLoss | None = None
    i2v: pd.DataFrame | None = None
    classifier_report: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        log.warning("evaluation: %s", message)
        self.notes.append(message)

    def finite_metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in sorted(self.metrics.items()) if v is not None and math.isfinite(float(v))}

    def confusion(self, attribute: str) -> pd.DataFrame:
        labels = {"color": COLOR_LABELS, "shape": SHAPE_LABELS, "direction": DIRECTION_LABELS}[attribute]
        p = self.predictions
        return confusion_table(p[f"pred_{attribute}"], p[attribute], labels)

    def by_prompt(self) -> pd.DataFrame:
        """One row per prompt, in the order they were drawn: its labels, how many of its samples
        the classifier read right per attribute, and what it read (samples in order, space-separated).
        The prompt-following failures cluster by prompt (every sample of a prompt drawn wrong), which
        the overall accuracies and confusion tables do not show."""
        p = self.predictions
        rows = []
        for prompt, group in p.groupby("prompt", sort=False):
            group = group.sort_values("sample")
            row = {"prompt": prompt, **{a: group[a].iloc[0] for a in ATTRIBUTES}}
            if "novel_combination" in group:
                row["novel_combination"] = bool(group["novel_combination"].iloc[0])
            row["samples"] = len(group)
            row.update({f"{a}_correct": int((group[f"pred_{a}"] == group[a]).sum()) for a in ATTRIBUTES})
            row.update({f"predicted_{a}": " ".join(group[f"pred_{a}"].astype(str)) for a in ATTRIBUTES})
            rows.append(row)
        return pd.DataFrame(rows)


def _nanmean(values: np.ndarray) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else math.nan


def _subsample_frames(videos: np.ndarray, count: int, seed: int) -> np.ndarray:
    frames = videos.reshape(-1, *videos.shape[2:])
    if len(frames) <= count:
        return frames
    idx = np.sort(np.random.default_rng(seed).choice(len(frames), size=count, replace=False))
    return frames[idx]


def _feature_extractor(params, classifier: AttributeClassifier, report: EvalReport):
    """(extractor for FID/KID, CLIP extractor or None)."""
    cfg = params.eval
    if cfg.feature_extractor == "classifier":
        report.note(
            "clipsim: not measured (eval.feature_extractor is 'classifier': no pretrained CLIP weights configured)"
        )
        return FrameFeatureExtractor(classifier), None
    from soraflow.evaluation.clip import load_clip_extractor

    clip = load_clip_extractor(cfg.clip_model, cfg.feature_extractor)
    return clip, clip


def evaluate_model(params, generator, *, classifier: AttributeClassifier | None = None, progress: bool = True) -> EvalReport:
    """Measure ``generator`` (a :class:`soraflow.sampling.VideoGenerator`, or anything with
    ``generate``, ``model``, ``diffusion`` and ``vae``) on the held-out data named by ``params``,
    with ``eval.threads`` torch threads."""
    with torch_threads(params.eval.threads):
        return _measure(params, generator, classifier=classifier, progress=progress)


def _measure(params, generator, *, classifier: AttributeClassifier | None, progress: bool) -> EvalReport:
    cfg = params.eval
    report = EvalReport()
    m = report.metrics
    size = eval_size(params)
    t, h, w = size
    fi = params.buckets.frame_interval
    options = sampling_options(params)
    if classifier is None:
        classifier = load_classifier(cfg.classifier.output)
    from soraflow.evaluation.classifier import read_report

    report.classifier_report = read_report(cfg.classifier.output)
    spec = classifier.spec
    if (spec.num_frames, spec.height, spec.width_px) != size:
        report.note(
            f"the attribute classifier was trained at {spec.num_frames}x{spec.height}x{spec.width_px}, "
            f"the evaluation size is {t}x{h}x{w}: retrain it (eval_classifier stage)"
        )
    m.update(chance_levels())

    # -- held-out prompts and real references
    table = _clip_table(params)
    prompts = select_heldout_prompts(table, cfg.num_prompts, cfg.seed, _augmented_captions(params))
    report.prompts = prompts
    m["num_prompts"] = float(len(prompts))
    m["num_prompts_novel_combination"] = float(prompts["novel_combination"].sum())
    log.info("%d held-out prompts (%d with an unseen colour/shape/direction combination)", len(prompts),
             int(prompts["novel_combination"].sum()))
    held = table[(table["split"] == "heldout") & (_kind(table) == "video") & table["direction"].notna()]
    held_frames = dict(zip(held.index, load_clips(held, h, w, progress=progress, desc="decode held-out clips")))
    real_windows = {i: fixed_windows(f, t, fi, cfg.real_windows_per_clip) for i, f in held_frames.items()}

    # -- classifier ceilings: on the real held-out clips, and on the same clips after the VAE's
    #    encode -> decode (a generator can at best produce what the VAE decodes, so a blurred
    #    corner there is a lost shape in every generated video)
    ceilings = {"real": None}
    vae = getattr(generator, "vae", None)
    if vae is None:
        report.note("classifier_vae_*_accuracy: not measured (the generator exposes no VAE)")
    else:
        ceilings["vae"] = lambda windows: _vae_round_trip(vae, windows)
    held_clips = labelled_clips(held, list(held_frames.values()))
    for name, transform in ceilings.items():
        found = evaluate_on_clips(classifier, held_clips, cfg.real_windows_per_clip, transform=transform)
        for a in ("color", "shape", "direction"):
            m[f"classifier_{name}_{a}_accuracy"] = found[f"{a}_accuracy"]

    # -- generation
    rep_prompts = [p for p in prompts["prompt"] for _ in range(cfg.samples_per_prompt)]
    videos = _generate(generator, rep_prompts, size=size, options=options, seed=cfg.seed, batch_size=cfg.batch_size,
                       progress=progress, desc="generate held-out prompts")
    report.videos = videos
    pred = predict_videos(classifier, videos)
    rows = prompts.loc[prompts.index.repeat(cfg.samples_per_prompt)].reset_index(drop=True)
    rows["sample"] = np.tile(np.arange(cfg.samples_per_prompt), len(prompts))
    for a in ("color", "shape", "direction"):
        rows[f"pred_{a}"] = pred[a]
        m[f"{a}_accuracy"] = accuracy(pred[a], rows[a].tolist())
    m["num_videos"] = float(len(videos))

    # -- temporal proxies (generated, and real references measured the same way)
    rows["flicker"] = flicker(videos)
    rows["frame_consistency"] = frame_consistency(pred["features"])
    rows["object_speed"] = object_speed(videos, rows["color"].tolist())
    m["flicker"] = _nanmean(rows["flicker"])
    m["frame_consistency"] = _nanmean(rows["frame_consistency"])
    prompt_clips = prompts["clip_index"].tolist()
    real_all = np.concatenate([real_windows[i] for i in prompt_clips])
    real_colors = [c for i, c in zip(prompt_clips, prompts["color"]) for _ in range(len(real_windows[i]))]
    real_dirs = [d for i, d in zip(prompt_clips, prompts["direction"]) for _ in range(len(real_windows[i]))]
    real_pred = predict_videos(classifier, real_all)
    m["flicker_real"] = _nanmean(flicker(real_all))
    m["frame_consistency_real"] = _nanmean(frame_consistency(real_pred["features"]))
    real_speed = object_speed(real_all, real_colors)
    moving = rows["direction"] != "none"
    real_moving = np.array([d != "none" for d in real_dirs])
    for name, gen_mask, real_mask in (("moving", moving.to_numpy(), real_moving), ("still", ~moving.to_numpy(), ~real_moving)):
        if gen_mask.any():
            m[f"motion_magnitude_{name}"] = _nanmean(rows["object_speed"].to_numpy()[gen_mask])
            m[f"motion_magnitude_{name}_real"] = _nanmean(real_speed[real_mask]) if real_mask.any() else math.nan
        else:
            report.note(f"motion_magnitude_{name}: no {'moving' if name == 'moving' else 'standing-still'} held-out prompt")
    report.predictions = rows

    # -- FID / KID / CLIPSIM
    extractor, clip = _feature_extractor(params, classifier, report)
    m["fid_uses_clip"] = float(clip is not None)
    half_a = prompts.index[prompts["half"] == "A"]
    half_b = prompts.index[prompts["half"] == "B"]
    if len(half_a) and len(half_b):
        real_a = np.concatenate([real_windows[prompts.loc[i, "clip_index"]] for i in half_a])
        real_b = np.concatenate([real_windows[prompts.loc[i, "clip_index"]] for i in half_b])
        gen_a = videos[rows["half"].to_numpy() == "A"]
        n_a = real_a.shape[0] * real_a.shape[1]
        gen_frames = _subsample_frames(gen_a, n_a, cfg.seed)
        m["fid"] = frechet_distance(extractor, real_b, gen_frames)
        m["fid_real_halves"] = frechet_distance(extractor, real_b, real_a)
        m["fid_ratio"] = m["fid"] / m["fid_real_halves"] if m["fid_real_halves"] > 0 else math.nan
        m["fid_frames_generated"] = float(len(gen_frames))
        m["fid_frames_real_half"] = float(n_a)
        kid = fid_kid(extractor, real_all, videos, kid_subset_size=cfg.kid_subset_size, kid_subsets=cfg.kid_subsets,
                      seed=cfg.seed)
        m["kid_mean"], m["kid_std"] = kid["kid_mean"], kid["kid_std"]
        m["fid_same_prompts"] = kid["fid"]
    else:
        report.note("fid/fid_real_halves/kid: need at least two held-out prompts (one per half)")
    if clip is not None:
        from soraflow.evaluation.clip import clipsim

        rows["clipsim"] = clipsim(clip, videos, rows["prompt"].tolist())
        m["clipsim"] = _nanmean(rows["clipsim"])
        m["clipsim_real"] = _nanmean(clipsim(clip, real_all, [p for i, p in zip(prompt_clips, prompts["prompt"]) for _ in range(len(real_windows[i]))]))

    # -- held-out diffusion loss
    if cfg.heldout_loss:
        _heldout_loss(params, generator, report, progress)
    if cfg.caption_sensitivity_clips > 0:
        _caption_sensitivity(params, generator, report)

    # -- image-to-video
    if cfg.i2v:
        order = list(dict.fromkeys(prompt_clips + list(held.index)))[: cfg.i2v_count]
        _image_to_video(params, generator, classifier, report, order, held, real_windows, size, options, progress)
    return report


def _heldout_loss(params, generator, report: EvalReport, progress: bool) -> None:
    from soraflow.features.cache import FeatureCache

    cfg = params.eval
    root = Path(params.features.output)
    try:
        cache = FeatureCache(root, split="heldout")
    except FileNotFoundError as err:
        report.note(f"heldout_loss: not measured ({err})")
        return
    if len(cache) == 0:
        report.note(f"heldout_loss: not measured ({root} holds no held-out rows; is 'heldout' in features.splits?)")
        return
    result = heldout_loss(
        generator.model, generator.diffusion, cache, num_timesteps=cfg.loss_timesteps, batch_size=cfg.loss_batch_size,
        seed=cfg.seed, progress=progress,
    )
    report.loss = result
    report.metrics.update(result.metrics())


def _caption_sensitivity(params, generator, report: EvalReport) -> None:
    from soraflow.evaluation.caption_sensitivity import caption_sensitivity
    from soraflow.features.cache import FeatureCache

    if getattr(generator, "model", None) is None or not hasattr(generator, "encode_prompts"):
        report.note("caption_sensitivity: not measured (the generator exposes no diffusion model and text encoder)")
        return
    try:
        cache = FeatureCache(Path(params.features.output), split="heldout")
    except FileNotFoundError as err:
        report.note(f"caption_sensitivity: not measured ({err})")
        return
    found = caption_sensitivity(
        generator.model, generator.diffusion, cache, generator.encode_prompts,
        max_clips=params.eval.caption_sensitivity_clips, seed=params.eval.seed,
    )
    if not found:
        report.note("caption_sensitivity: no held-out video clip with a demo caption")
    report.metrics.update(found)


def _vae_round_trip(vae, frames: np.ndarray) -> np.ndarray:
    """uint8 frames ``[..., H, W, 3]`` (one frame or a clip) after the VAE's encode -> decode."""
    frames = np.asarray(frames)
    clip = frames.reshape(-1, *frames.shape[-3:])
    x = torch.from_numpy(np.ascontiguousarray(clip)).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)
    x = x[None].to(device=vae.device, dtype=vae.dtype)  # [1, 3, T, H, W]
    with torch.no_grad():
        y = vae.decode(vae.encode(x)).float().cpu()
    out = ((y[0].clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    return out.reshape(frames.shape)


def _image_to_video(params, generator, classifier, report: EvalReport, clip_ids: list, held: pd.DataFrame,
                    real_windows: dict, size: tuple[int, int, int], options: dict[str, Any], progress: bool) -> None:
    from tqdm.auto import tqdm

    t, h, w = size
    cfg = params.eval
    records = []
    for k, i in enumerate(tqdm(clip_ids, desc="image-to-video", disable=not progress, mininterval=1.0)):
        reference = real_windows[i][0][0]  # first frame of the clip's first window, at the eval size
        prompt = str(held.loc[i, "text"])
        video = generator.generate(
            [prompt], num_frames=t, height=h, width=w, seed=cfg.seed + k, reference=[reference],
            mask_strategy=I2V_MASK_STRATEGY, steps=options.get("steps"), sampler=options.get("sampler"),
            guidance=options.get("guidance"),
        )[0]
        target = _vae_round_trip(generator.vae, reference)
        colour = str(held.loc[i, "color"])  # the reference clip's object colour (its caption)
        generated = predict_videos(classifier, video[None])
        real = predict_videos(classifier, real_windows[i][:1])
        frame_colors, real_colors = generated["frame_color"][0], real["frame_color"][0]
        direction = str(held.loc[i, "direction"])  # the prompt's direction ("none": standing still)
        records.append(
            {
                "prompt": prompt,
                "first_frame_psnr": psnr(video[0], target),
                "vae_round_trip_psnr": psnr(target, reference),
                "color": colour,
                "reference_predicted_color": predict_videos(classifier, reference[None, None])["frame_color"][0][0],
                "color_kept": float(np.mean([c == colour for c in frame_colors])),
                "color_kept_real": float(np.mean([c == colour for c in real_colors])),
                "direction": direction,
                "predicted_direction": generated["direction"][0],
                "predicted_direction_real": real["direction"][0],
            }
        )
    table = pd.DataFrame(records)
    report.i2v = table
    m = report.metrics
    m["i2v_first_frame_psnr"] = _nanmean(np.minimum(table["first_frame_psnr"].to_numpy(), 100.0))
    m["i2v_first_frame_psnr_min"] = float(np.minimum(table["first_frame_psnr"].min(), 100.0))
    m["i2v_vae_round_trip_psnr"] = _nanmean(np.minimum(table["vae_round_trip_psnr"].to_numpy(), 100.0))
    m["i2v_color_kept"] = _nanmean(table["color_kept"])
    m["i2v_color_kept_real"] = _nanmean(table["color_kept_real"])
    # with the object's position given by the first frame, does the clip move the prompted way?
    m["i2v_direction_accuracy"] = accuracy(table["predicted_direction"].tolist(), table["direction"].tolist())
    m["i2v_direction_accuracy_real"] = accuracy(table["predicted_direction_real"].tolist(), table["direction"].tolist())
    m["i2v_count"] = float(len(table))


# ----------------------------------------------------------------------------- outputs


def write_outputs(report: EvalReport, cfg) -> list[Path]:
    """``eval.json`` (flat, finite values only) and the plot CSVs; returns the paths written."""
    written = []
    metrics_path = Path(cfg.metrics_path)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(report.finite_metrics(), indent=2, sort_keys=True) + "\n")
    written.append(metrics_path)
    plots = Path(cfg.plots_dir)
    plots.mkdir(parents=True, exist_ok=True)
    if report.loss is not None:
        for name, df in (("eval_loss_by_timestep.csv", report.loss.by_timestep()), ("eval_loss_by_bucket.csv", report.loss.by_bucket())):
            df.to_csv(plots / name, index=False)
            written.append(plots / name)
    if report.predictions is not None:
        for a in ("color", "shape", "direction"):
            path = plots / f"eval_confusion_{a}.csv"
            report.predictions[[a, f"pred_{a}"]].rename(columns={a: "actual", f"pred_{a}": "predicted"}).to_csv(path, index=False)
            written.append(path)
        report.by_prompt().to_csv(plots / "eval_prompts.csv", index=False)
        written.append(plots / "eval_prompts.csv")
    if report.i2v is not None:
        report.i2v.to_csv(plots / "eval_i2v.csv", index=False)
        written.append(plots / "eval_i2v.csv")
    return written


def run_evaluation(params, generator, *, classifier: AttributeClassifier | None = None, progress: bool = True,
                   write: bool = True) -> dict[str, float]:
    """Evaluate ``generator`` and write ``eval.metrics_path`` + plot CSVs; returns the metrics
    (finite values; see the module docstring for the keys)."""
    report = evaluate_model(params, generator, classifier=classifier, progress=progress)
    if write:
        write_outputs(report, params.eval)
    return report.finite_metrics()
