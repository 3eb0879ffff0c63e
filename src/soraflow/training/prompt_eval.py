"""Prompt following measured during training: the direction-accuracy curve in MLflow.

Every ``train.prompt_eval_every`` optimizer steps, rank 0 generates one short video per
held-out prompt with the current weights (the same frozen VAE and text encoder, the model's
own sampler) and scores colour, shape and motion direction with the in-domain attribute
classifier of the ``eval_classifier`` stage. The metrics (``prompt/direction_accuracy`` ...)
join that step's metric line, so the train flow logs them to MLflow as curves beside the loss.

It draws its noise from its own seed inside :func:`torch.random.fork_rng`, so switching it on
changes neither the training batches nor the training noise: exact resume still holds. With
FSDP2 the weights are sharded over the ranks and one rank cannot sample alone, so it is off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

PromptEval = Callable[[int, nn.Module], dict[str, float]]


def build_prompt_eval(params, ctx) -> PromptEval | None:
    """The evaluation callback for :class:`~soraflow.training.components.Components`, or None
    when it is off, when this is not rank 0, or when its classifier has not been trained (logged)."""
    cfg = params.train
    if cfg.prompt_eval_every <= 0 or not ctx.is_main:
        return None
    if cfg.strategy == "fsdp2" and ctx.world_size > 1:
        log.warning("train.prompt_eval_every: off under FSDP2 with %d ranks (rank 0 holds a shard only)", ctx.world_size)
        return None
    folder = Path(params.eval.classifier.output)
    if not (folder / "model.safetensors").is_file():
        log.warning(
            "train.prompt_eval_every: no attribute classifier at %s (run the eval_classifier stage); "
            "prompt following is not measured during this run", folder,
        )
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
    log.info("prompt following every %d steps on %d held-out prompts: %s", cfg.prompt_eval_every, len(prompts), prompts[:3])

    def evaluate(step: int, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        t0 = time.perf_counter()
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                generator = VideoGenerator(
                    model, vae, text_encoder, params.diffusion,
                    frame_interval=params.buckets.frame_interval, buckets=params.buckets, source="training",
                )
                scores = quick_prompt_following(
                    generator, classifier, prompts, **size,
                    samples_per_prompt=cfg.prompt_eval_samples, steps=cfg.prompt_eval_sampling_steps,
                    seed=params.eval.seed, batch_size=params.eval.batch_size,
                )
        finally:
            model.train(was_training)
        out = {f"prompt/{k}": v for k, v in scores.items() if not k.endswith("_chance") and k != "num_videos"}
        out["prompt/seconds"] = time.perf_counter() - t0
        log.info(
            "step %d prompt following: colour %.2f shape %.2f direction %.2f (%.1f s)", step,
            out.get("prompt/color_accuracy", float("nan")), out.get("prompt/shape_accuracy", float("nan")),
            out.get("prompt/direction_accuracy", float("nan")), out["prompt/seconds"],
        )
        return out

    return evaluate
