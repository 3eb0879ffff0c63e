"""Pretrained CLIP (open_clip, from a local path) as the FID/KID features, and CLIPSIM.

Only used when ``eval.feature_extractor`` names open_clip weights (a file or a folder); no
weights are downloaded. torchmetrics' ``CLIPScore`` breaks under transformers 5 (its feature
getters return objects), so CLIPSIM is computed here with open_clip: for each video, the mean
over frames of ``max(100 * cos(image, text), 0)`` (torchmetrics' CLIP score definition), then
the mean over videos.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from soraflow.config_base import ConfigError

__all__ = ["ClipFeatureExtractor", "clipsim", "load_clip_extractor"]

_DEFAULT_MEAN = (0.48145466, 0.4578275, 0.40821073)
_DEFAULT_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipFeatureExtractor(nn.Module):
    """An open_clip model as a torchmetrics feature extractor (uint8 ``[N, 3, H, W]`` in,
    L2-normalised image embeddings out), plus a text encoder for CLIPSIM."""

    def __init__(self, model: nn.Module, tokenizer, image_size: int, mean: Sequence[float], std: Sequence[float], num_features: int):
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.num_features = int(num_features)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False).clamp(0, 1)
        x = (x.to(self.mean.device) - self.mean) / self.std
        emb = self.model.encode_image(x).float()
        return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.mean.device)
        emb = self.model.encode_text(tokens).float()
        return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def load_clip_extractor(arch: str, pretrained: str, device: str = "cpu") -> ClipFeatureExtractor:
    """open_clip ``arch`` with weights at ``pretrained`` (a file, or a folder with
    ``open_clip_config.json``); :class:`ConfigError` naming ``eval.feature_extractor`` otherwise."""
    from soraflow.curation.scores.clip_scores import embed_dim, load_open_clip

    try:
        model, preprocess, tokenizer = load_open_clip(arch, pretrained, device)
    except ConfigError as err:
        raise ConfigError(f"eval.feature_extractor / eval.clip_model: {err}") from None
    size = getattr(getattr(model, "visual", None), "image_size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
    mean, std = cfg.get("mean", _DEFAULT_MEAN), cfg.get("std", _DEFAULT_STD)
    return ClipFeatureExtractor(model, tokenizer, int(size), mean, std, embed_dim(model)).to(device)


@torch.no_grad()
def clipsim(extractor: ClipFeatureExtractor, videos: np.ndarray, prompts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Per video: mean over frames of ``max(100 * cos(frame, prompt), 0)``."""
    v = np.asarray(videos)
    if v.ndim != 5 or len(v) != len(prompts):
        raise ValueError(f"expected videos [B, T, H, W, 3] with one prompt each, got {v.shape} and {len(prompts)} prompts")
    text = extractor.encode_text(prompts)  # [B, D]
    out = np.zeros(len(v), np.float64)
    for i, video in enumerate(v):
        frames = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2)
        emb = torch.cat([extractor(frames[j : j + batch_size]) for j in range(0, len(frames), batch_size)])
        out[i] = float((100.0 * emb @ text[i]).clamp_min(0).mean())
    return out
