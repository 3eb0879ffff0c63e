"""The real training components: STDiT2 + IDDPM (or rectified flow) on the feature cache.

:func:`build_components` is the ``default`` builder of the torchrun worker. Data comes from
the feature cache (``features`` stage: latents at each clip's bucket size, caption states), or,
with ``train.use_feature_cache: false``, from the curated clip files encoded online by the
frozen VAE and text encoder inside the loss (Open-Sora 1.1's way; slower, for data too large
to cache).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from soraflow.buckets import BucketSampler
from soraflow.features.cache import IMAGE_FPS, FeatureCache
from soraflow.training.components import Components, drop_captions
from soraflow.training.prompt_eval import build_prompt_eval

log = logging.getLogger(__name__)


class CachedBucketSampler(BucketSampler):
    """A :class:`BucketSampler` over feature-cache rows whose buckets were fixed at caching time.

    The epoch's grouping, shuffling, cutting and dealing are the parent's; only the per-epoch
    re-assignment is skipped (a cached latent exists at one bucket size only).
    """

    def _assign(self, epoch: int) -> pd.DataFrame:
        return self.df


class CachedSamples(torch.utils.data.Dataset):
    """Map-style dataset over a :class:`FeatureCache`, indexed by the sampler's requests."""

    def __init__(self, cache: FeatureCache):
        self.cache = cache
        ix = cache.index
        self._bucket_names = [
            f"{res}/{int(t)}f/{float(ar):.2f}"
            for res, t, ar in zip(ix["bucket_resolution"], ix["bucket_num_frames"], ix["bucket_aspect_ratio"])
        ]

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, request) -> dict[str, Any]:
        index = int(getattr(request, "index", request))
        b = self.cache.batch([index])
        sample = {k: v[0] for k, v in b.items()}
        sample["bucket"] = self._bucket_names[index]
        return sample


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], (int, float)):
            out[key] = torch.tensor(values, dtype=torch.float32)
        else:
            out[key] = values if key != "bucket" else values[0]
    return out


def _latent_tokens(batch: dict[str, Any], patch: tuple[int, int, int]) -> int:
    x = batch["latents"]
    b, _, t, h, w = x.shape
    return b * math.ceil(t / patch[0]) * math.ceil(h / patch[1]) * math.ceil(w / patch[2])


def build_model_from_params(params, caption_channels: int, caption_max_length: int, seed: int) -> nn.Module:
    from soraflow.models import build_model, load_model

    if params.model.init_from:
        model = load_model(params.model.init_from)
        log.info("model initialised from %s", params.model.init_from)
        return model
    config = params.model.resolve(caption_channels=caption_channels, caption_max_length=caption_max_length)
    return build_model(config, seed=seed)


def build_components(params, ctx) -> Components:
    """Model, data, sampler and loss for ``soraflow train`` (see the module docstring)."""
    from soraflow.diffusion import build_diffusion
    from soraflow.masks import MaskGenerator
    from soraflow.models import save_model

    cfg = params.train
    diffusion = build_diffusion(params.diffusion)
    masks = MaskGenerator(params.masks.mask_ratios)
    encode = None
    if cfg.use_feature_cache:
        cache = FeatureCache(params.features.output, split="train")
        if len(cache) == 0:
            raise ValueError(f"{params.features.output}: the feature cache holds no training rows")
        dataset = CachedSamples(cache)
        sampler = CachedBucketSampler(
            cache.index, params.buckets, num_replicas=ctx.world_size, rank=ctx.rank, seed=cfg.seed,
            id_column="sample_id",
        )
        channels, length = cache.info["caption_channels"], cache.info["caption_max_length"]
        info = {"rows": len(cache), "clips": int(cache.index["id"].nunique()), "source": "feature cache"}
    else:
        from soraflow.buckets.dataset import VideoClipDataset
        from soraflow.encoders import load_text_encoder, load_vae

        clips = pd.read_parquet(Path(params.curate.output) / "clips.parquet")
        # Clip files are already cut: start_frame/end_frame are provenance (source frames), not offsets.
        clips = clips[clips["split"] == "train"].drop(columns=["start_frame", "end_frame"], errors="ignore")
        clips = clips.reset_index(drop=True)
        sampler = BucketSampler(clips, params.buckets, num_replicas=ctx.world_size, rank=ctx.rank, seed=cfg.seed)
        base = VideoClipDataset(clips, root=".", frame_interval=params.buckets.frame_interval)
        dataset = _OnlineSamples(base)
        vae = load_vae(params.vae, device=ctx.device)
        text_encoder = load_text_encoder(params.text_encoder, device=ctx.device)
        channels, length = text_encoder.caption_channels, text_encoder.max_length

        def encode(step: int, micro: int, batch: dict[str, Any]) -> None:
            # Runs before caption dropout (the engine's on_batch hook), in place.
            with torch.no_grad():
                batch["latents"] = vae.encode(batch.pop("video").to(ctx.device)).float()
                batch["y"], batch["mask"] = text_encoder.encode(list(batch.pop("text")))

        info = {"clips": len(clips), "source": "online encoding"}

    model = build_model_from_params(params, channels, length, cfg.seed)
    patch = tuple(model.config.patch_size)

    def loss_fn(model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        x = batch["latents"]
        x_mask, _ = masks.sample(x.shape[0], x.shape[2], device=x.device)
        kwargs = {
            "y": batch["y"].to(x.device),
            "mask": batch["mask"].to(x.device),
            "height": batch["height"].to(x.device),
            "width": batch["width"].to(x.device),
            "num_frames": batch["num_frames"].to(x.device),
            "fps": batch["fps"].to(x.device),
        }
        out = diffusion.training_losses(model, x, kwargs, x_mask=x_mask)
        out["bucket"] = batch["bucket"]
        return out

    prompt_eval = build_prompt_eval(params, ctx)
    return Components(
        model=model,
        dataset=dataset,
        sampler=sampler,
        loss_fn=loss_fn,
        collate_fn=collate_samples,
        caption_dropout=drop_captions if cfg.caption_dropout > 0 else None,
        count_tokens=lambda b: _latent_tokens(b, patch) if "latents" in b else 0,
        num_timesteps=params.diffusion.num_timesteps,
        save_model=save_model,
        on_batch=encode,
        evaluate=prompt_eval,
        evaluate_every=cfg.prompt_eval_every,
        evaluate_on_all_ranks=prompt_eval is not None and prompt_eval.every_rank,
        info=info,
    )


class _OnlineSamples(torch.utils.data.Dataset):
    """Clip files read at their bucket size; encoded by the frozen encoders inside the loss."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, request) -> dict[str, Any]:
        item = self.base[request]
        fps = item["fps"]
        return {
            "video": item["video"],
            "text": item["text"],
            "height": float(item["height"]),
            "width": float(item["width"]),
            "num_frames": float(item["num_frames"]),
            "fps": IMAGE_FPS if not np.isfinite(fps) else float(fps),
            "bucket": f"{request.num_frames}f/{request.height}x{request.width}",
        }
