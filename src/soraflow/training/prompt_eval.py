"""Prompt following measured during training: the direction-accuracy curve in MLflow.

Every ``train.prompt_eval_every`` optimizer steps, one short video is generated per held-out
prompt with the current weights (the same frozen VAE and text encoder, the model's own sampler)
and colour, shape and motion direction are scored with the in-domain attribute classifier of
the ``eval_classifier`` stage. The metrics (``prompt/direction_accuracy`` ...) join that step's
metric line, so the train flow logs them to MLflow as curves beside the loss.

Under DDP every rank holds the same weights, so the ranks share the batches of prompts (rank
``r`` draws batches ``r, r + world, ...``, each with its own seed) and gather the videos: the
scores are the ones a single rank would compute, in a fraction of the time, instead of the other
ranks waiting for rank 0. When the classifier is missing on some rank (another node), rank 0
measures alone.

It draws its noise from its own seed inside :func:`torch.random.fork_rng`, so switching it on
changes neither the training batches nor the training noise: exact resume still holds. With
FSDP2 the weights are sharded over the ranks and one rank cannot sample alone, so it is off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from soraflow.training.distributed import all_gather_object

log = logging.getLogger(__name__)

PromptEval = Callable[[int, nn.Module], dict[str, float]]


@dataclass(frozen=True)
class PromptEvaluator:
    """``evaluator(step, model) -> metrics``; ``every_rank``: every rank calls it at the same
    steps (it shares the work and is a collective), else rank 0 alone does."""

    evaluate: PromptEval
    every_rank: bool = False

    def __call__(self, step: int, model: nn.Module) -> dict[str, float]:
        return self.evaluate(step, model)


def build_prompt_eval(params, ctx) -> PromptEvaluator | None:
    """The evaluation callback for :class:`~soraflow.training.components.Components`, or None
    when it is off, when its classifier has not been trained (logged), or on a rank that takes
    no part. Every rank of the job calls this builder at the same point (it is a collective)."""
    cfg = params.train
    if cfg.prompt_eval_every <= 0:
        return None
    if cfg.strategy == "fsdp2" and ctx.world_size > 1:
        if ctx.is_main:
            log.warning("train.prompt_eval_every: off under FSDP2 with %d ranks (rank 0 holds a shard only)", ctx.world_size)
        return None
    folder = Path(params.eval.classifier.output)
    found = all_gather_object((folder / "model.safetensors").is_file(), ctx)  # per rank, rank 0 first
    if not found[0]:
        if ctx.is_main:
            log.warning(
                "train.prompt_eval_every: no attribute classifier at %s (run the eval_classifier stage); "
                "prompt following is not measured during this run", folder,
            )
        return None
    shared = all(found) and ctx.distributed and ctx.world_size > 1
    if not (shared or ctx.is_main):
        return None

    from soraflow.encoders import load_text_encoder, load_vae
    from soraflow.evaluation.classifier import load_classifier
    from soraflow.evaluation.runner import quick_prompt_following, quick_prompts
    from soraflow.sampling.generator import VideoGenerator

    classifier = load_classifier(folder, device=ctx.device)
    vae = load_vae(params.vae, device=ctx.device)
    text_encoder = load_text_encoder(params.text_encoder, device=ctx.device)
    prompts = quick_prompts(params, cfg.prompt_eval_prompts)
    size = {
        "num_frames": params.sample.num_frames,
        "height": params.sample.height,
        "width": params.sample.width,
    }
    if ctx.is_main:
        log.info(
            "prompt following every %d steps on %d held-out prompts (%s): %s", cfg.prompt_eval_every, len(prompts),
            f"shared by {ctx.world_size} ranks" if shared else "rank 0", prompts[:3],
        )
    shard = (ctx.rank, ctx.world_size) if shared else (0, 1)

    def evaluate(step: int, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        t0 = time.perf_counter()
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                generator = VideoGenerator(
                    model, vae, text_encoder, params.diffusion,
                    frame_interval=params.buckets.frame_interval, buckets=params.buckets, source="training",
                    mixed_precision=cfg.mixed_precision,  # sample as the model trains
                )
                scores = quick_prompt_following(
                    generator, classifier, prompts, **size,
                    samples_per_prompt=cfg.prompt_eval_samples, steps=cfg.prompt_eval_sampling_steps,
                    seed=params.eval.seed, batch_size=params.eval.batch_size,
                    shard=shard, gather=lambda obj: all_gather_object(obj, ctx),
                )
        finally:
            model.train(was_training)
        out = {f"prompt/{k}": v for k, v in scores.items() if not k.endswith("_chance") and k != "num_videos"}
        out["prompt/seconds"] = time.perf_counter() - t0
        (log.info if ctx.is_main else log.debug)(
            "step %d prompt following: colour %.2f shape %.2f direction %.2f (%.1f s)", step,
            out.get("prompt/color_accuracy", float("nan")), out.get("prompt/shape_accuracy", float("nan")),
            out.get("prompt/direction_accuracy", float("nan")), out["prompt/seconds"],
        )
        return out

    return PromptEvaluator(evaluate, every_rank=shared)
