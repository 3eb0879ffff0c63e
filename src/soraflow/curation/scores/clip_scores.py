"""``aesthetic`` and ``match`` from an open_clip model.

- ``aesthetic``: each CLIP frame (10/50/90% of the clip) -> open_clip image embedding,
  L2-normalised -> LAION "improved aesthetic predictor" MLP -> mean over frames (~1..10 with
  the public ``sac+logos+ava1-l14-linearMSE.pth`` head on ViT-L/14).
- ``match``: 100 x cosine between the caption's text embedding and the middle frame's image
  embedding (the original's CLIP score; may be negative).

Weights: ``clip_pretrained`` is a checkpoint file (with the architecture ``clip_model``), a
folder holding ``open_clip_config.json`` plus weights, or ``hf-hub:org/repo``, which is looked
up in the local Hugging Face cache only (no download is ever attempted).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from soraflow.config_base import ConfigError

log = logging.getLogger(__name__)

HF_PREFIX = "hf-hub:"


class AestheticMLP(nn.Module):
    """The LAION improved-aesthetic-predictor head, same layer layout as the original.

    ``layers`` indices 0, 2, 4, 6, 7 are the Linear layers (1, 3, 5 are Dropout, no
    activations), so the public ``*-linearMSE.pth`` state dicts load unchanged.
    """

    def __init__(self, input_size: int = 768) -> None:
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return state


def load_aesthetic_head(path: str, embed_dim: int, device: str) -> AestheticMLP:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"curate.scores.aesthetic_head: file not found: {p}")
    state = _load_state_dict(p)
    w0 = state.get("layers.0.weight")
    if w0 is None:
        raise ConfigError(
            f"curate.scores.aesthetic_head: {p} is not an improved-aesthetic-predictor state dict "
            f"(no 'layers.0.weight'; keys: {sorted(state)[:6]})"
        )
    if w0.shape[1] != embed_dim:
        raise ConfigError(
            f"curate.scores.aesthetic_head: head expects {w0.shape[1]}-d embeddings but the CLIP "
            f"model gives {embed_dim}-d (ViT-L-14 heads need clip_model ViT-L-14)"
        )
    head = AestheticMLP(int(w0.shape[1]))
    head.load_state_dict(state)
    return head.eval().to(device)


def resolve_hub_id(value: str, key: str) -> Path:
    """Local snapshot folder of ``hf-hub:org/repo`` from the Hugging Face cache (no network)."""
    from huggingface_hub import snapshot_download

    repo = value[len(HF_PREFIX) :]
    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception as err:  # noqa: BLE001 - the hub raises several unrelated types offline
        raise ConfigError(
            f"curate.scores.{key}: {value} is not in the local Hugging Face cache "
            f"(downloads are disabled; put the files in a folder and give its path): {err}"
        ) from None


def load_open_clip(arch: str, pretrained: str, device: str) -> tuple[nn.Module, Any, Any]:
    """``(model, preprocess, tokenizer)`` from a file, folder or cached hub id."""
    import open_clip

    folder: Path | None = None
    if pretrained.startswith(HF_PREFIX):
        folder = resolve_hub_id(pretrained, "clip_pretrained")
        name, weights = f"local-dir:{folder}", None
    else:
        p = Path(pretrained).expanduser()
        if p.is_dir():
            folder = p
            name, weights = f"local-dir:{p}", None
        elif p.is_file():
            name, weights = arch, str(p)
        else:
            raise ConfigError(
                f"curate.scores.clip_pretrained: {pretrained!r} is neither a file, a folder nor "
                "an hf-hub:org/repo id (pretrained tags need a download and are not supported)"
            )
    if folder is not None:
        # open_clip builds a RANDOM model (with a warning) from a folder without weights: refuse
        if not any(next(folder.glob(f"*{ext}"), None) for ext in (".safetensors", ".bin", ".pth")):
            raise ConfigError(f"curate.scores.clip_pretrained: no weights file in {folder}")
        if not (folder / "open_clip_config.json").is_file():
            raise ConfigError(f"curate.scores.clip_pretrained: no open_clip_config.json in {folder}")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights, device=device)
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as err:  # noqa: BLE001 - report any loading failure with the key name
        raise ConfigError(f"curate.scores.clip_pretrained: cannot load {pretrained!r} as {name}: {err}") from err
    return model.eval(), preprocess, tokenizer


class ClipScorer:
    """Holds the open_clip model, its preprocessing, tokenizer and the optional aesthetic head."""

    def __init__(self, model: nn.Module, preprocess: Any, tokenizer: Any, head: AestheticMLP | None, device: str):
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.head = head
        self.device = device

    @classmethod
    def load(cls, arch: str, pretrained: str, head_path: str | None, device: str) -> ClipScorer:
        model, preprocess, tokenizer = load_open_clip(arch, pretrained, device)
        head = None
        if head_path:
            head = load_aesthetic_head(head_path, embed_dim(model), device)
        return cls(model, preprocess, tokenizer, head, device)

    @torch.inference_mode()
    def image_embeddings(self, frames: list[np.ndarray]) -> torch.Tensor:
        from PIL import Image

        batch = torch.stack([self.preprocess(Image.fromarray(f)) for f in frames]).to(self.device)
        emb = self.model.encode_image(batch).float()
        return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @torch.inference_mode()
    def text_embedding(self, text: str) -> torch.Tensor:
        tokens = self.tokenizer([text]).to(self.device)
        emb = self.model.encode_text(tokens).float()
        return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @torch.inference_mode()
    def aesthetic(self, image_emb: torch.Tensor) -> float:
        if self.head is None:
            return math.nan
        return float(self.head(image_emb).mean())

    def match(self, image_emb: torch.Tensor, text: str | None) -> float:
        if not text or not text.strip():
            return math.nan
        return float(100.0 * (self.text_embedding(text) @ image_emb.T).squeeze())


def embed_dim(model: nn.Module) -> int:
    """Output dimension of ``encode_image`` (open_clip models expose it in different places)."""
    for attr in ("embed_dim",):
        v = getattr(model, attr, None)
        if isinstance(v, int):
            return v
    visual = getattr(model, "visual", None)
    v = getattr(visual, "output_dim", None)
    if isinstance(v, int):
        return v
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[-1])
    raise ConfigError("curate.scores.clip_model: cannot tell the embedding size of this open_clip model")
