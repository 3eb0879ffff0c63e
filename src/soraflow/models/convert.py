"""Convert Open-Sora 1.1 STDiT2 checkpoints (``OpenSora-STDiT-v2-stage*``) to soraflow.

soraflow keeps the original's module names except where its modules differ:

=====================================  ======================================
Open-Sora 1.1                          soraflow
=====================================  ======================================
``x_embedder.proj.{weight,bias}``      ``x_embedder.{weight,bias}`` (same Conv3d-shaped weight)
``t_block.1.*`` / ``t_block_temp.1.*`` ``t_block.*`` / ``t_block_temp.*``
``y_embedder.y_proj.fc{1,2}.*``        ``y_embedder.fc{1,2}.*``
``y_embedder.y_embedding``             ``y_embedder.null_embedding``
=====================================  ======================================

The architecture is read off the tensor shapes. Released 1.1 weights were trained with
RoPE applied before the q/k RMSNorm, so converted models get
``legacy_rope_before_norm=True`` unless told otherwise.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from soraflow.models.config import STDiT2Config
from soraflow.models.stdit2 import STDiT2

__all__ = [
    "convert_opensora_checkpoint",
    "convert_opensora_state_dict",
    "export_opensora_state_dict",
    "load_checkpoint_file",
]

log = logging.getLogger(__name__)

#: (original, soraflow) key renames, as regular expressions applied to the whole key.
_RENAMES: list[tuple[str, str]] = [
    (r"^x_embedder\.proj\.(weight|bias)$", r"x_embedder.\1"),
    (r"^t_block\.1\.(weight|bias)$", r"t_block.\1"),
    (r"^t_block_temp\.1\.(weight|bias)$", r"t_block_temp.\1"),
    (r"^y_embedder\.y_proj\.(fc[12])\.(weight|bias)$", r"y_embedder.\1.\2"),
    (r"^y_embedder\.y_embedding$", r"y_embedder.null_embedding"),
]
_INVERSE: list[tuple[str, str]] = [
    (r"^x_embedder\.(weight|bias)$", r"x_embedder.proj.\1"),
    (r"^t_block\.(weight|bias)$", r"t_block.1.\1"),
    (r"^t_block_temp\.(weight|bias)$", r"t_block_temp.1.\1"),
    (r"^y_embedder\.(fc[12])\.(weight|bias)$", r"y_embedder.y_proj.\1.\2"),
    (r"^y_embedder\.null_embedding$", r"y_embedder.y_embedding"),
]
#: Keys of older/variant checkpoints that carry no weights (recomputed on the fly here).
_IGNORED = re.compile(r"^(pos_embed|pos_embed_temporal|pos_embed\.inv_freq)$")
_WRAPPERS = ("state_dict", "model", "module", "ema")


def _rename(key: str, table: list[tuple[str, str]]) -> str:
    for pattern, repl in table:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return key


def _unwrap(sd: Mapping[str, object]) -> dict[str, Tensor]:
    """Accept a bare state dict or a training checkpoint ``{"model"|"state_dict"|...: sd}``;
    strip DDP/FSDP ``module.`` prefixes."""
    for key in _WRAPPERS:
        inner = sd.get(key) if isinstance(sd, Mapping) else None
        if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
            sd = inner
            break
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if not isinstance(v, Tensor):
            raise ValueError(f"checkpoint entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out


def _infer_config(sd: Mapping[str, Tensor], num_heads: int | None, legacy: bool) -> STDiT2Config:
    def need(key: str) -> Tensor:
        if key not in sd:
            raise ValueError(f"not an Open-Sora STDiT2 state dict: missing {key!r}")
        return sd[key]

    patch_w = need("x_embedder.proj.weight")
    hidden, in_channels = int(patch_w.shape[0]), int(patch_w.shape[1])
    patch = tuple(int(p) for p in patch_w.shape[2:])
    if len(patch) != 3:
        raise ValueError(f"x_embedder.proj.weight has shape {tuple(patch_w.shape)}, expected a Conv3d weight")
    block_ids = {int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k))}
    depth = len(block_ids)
    if depth == 0 or block_ids != set(range(depth)):
        raise ValueError(f"blocks must be numbered 0..N-1, found {sorted(block_ids)[:8]}...")
    qk_norm = "blocks.0.attn.q_norm.weight" in sd
    if qk_norm:
        head_dim = int(sd["blocks.0.attn.q_norm.weight"].shape[0])
    elif "rope.freqs" in sd:
        head_dim = 2 * int(sd["rope.freqs"].shape[0])
    elif num_heads is not None:
        head_dim = hidden // num_heads
    else:
        raise ValueError("cannot tell the number of heads (no q_norm, no rope.freqs): pass num_heads")
    heads = hidden // head_dim
    if num_heads is not None and num_heads != heads:
        raise ValueError(f"num_heads={num_heads} contradicts the checkpoint's head dim {head_dim} ({heads} heads)")
    mlp_hidden = int(need("blocks.0.mlp.fc1.weight").shape[0])
    out = int(need("final_layer.linear.weight").shape[0])
    out_channels, rem = divmod(out, math.prod(patch))
    if rem or out_channels not in (in_channels, 2 * in_channels):
        raise ValueError(f"final_layer.linear has {out} outputs: not patch volume x {in_channels} or x {2 * in_channels}")
    fc1 = need("y_embedder.y_proj.fc1.weight")
    null = need("y_embedder.y_embedding")
    return STDiT2Config(
        in_channels=in_channels,
        patch_size=patch,
        hidden_size=hidden,
        depth=depth,
        num_heads=heads,
        mlp_ratio=mlp_hidden / hidden,
        learn_sigma=out_channels == 2 * in_channels,
        caption_channels=int(fc1.shape[1]),
        caption_max_length=int(null.shape[0]),
        qk_norm=qk_norm,
        legacy_rope_before_norm=legacy,
    )


def convert_opensora_state_dict(
    sd: Mapping[str, object],
    *,
    legacy_rope_before_norm: bool = True,
    num_heads: int | None = None,
    dtype: torch.dtype | None = torch.float32,
) -> tuple[STDiT2Config, dict[str, Tensor]]:
    """``(config, state_dict)`` for :class:`STDiT2` from an Open-Sora 1.1 STDiT2 state dict.

    The result is checked key by key and shape by shape against the model the config
    describes; anything missing or left over is an error naming the keys. Works on meta
    tensors too (nothing is copied except for the dtype cast).
    """
    original = _unwrap(sd)
    config = _infer_config(original, num_heads, legacy_rope_before_norm)
    converted: dict[str, Tensor] = {}
    for key, value in original.items():
        if _IGNORED.match(key):
            log.info("ignoring %s (recomputed on the fly)", key)
            continue
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        converted[_rename(key, _RENAMES)] = value
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in STDiT2(config).state_dict().items()}
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = sorted(k for k in set(expected) & set(converted) if tuple(converted[k].shape) != expected[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:10]}")
        if unexpected:
            parts.append(f"unexpected {[_rename(k, _INVERSE) for k in unexpected[:10]]}")
        if wrong:
            parts.append("wrong shapes " + ", ".join(f"{k}: {tuple(converted[k].shape)} != {expected[k]}" for k in wrong[:10]))
        raise ValueError("checkpoint does not match STDiT2: " + "; ".join(parts))
    return config, converted


def export_opensora_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse renaming: a soraflow STDiT2 state dict with Open-Sora 1.1 key names."""
    return {_rename(k, _INVERSE): v for k, v in state_dict.items()}


def load_checkpoint_file(path: str | Path) -> dict[str, Tensor]:
    """Read a ``.safetensors`` file, or a ``.pt``/``.pth``/``.bin`` with ``torch.load(weights_only=True)``
    (never unpickles arbitrary objects)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def convert_opensora_checkpoint(
    src: str | Path,
    dst: str | Path,
    *,
    legacy_rope_before_norm: bool = True,
    num_heads: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> STDiT2Config:
    """Read an Open-Sora STDiT2 checkpoint file and write a soraflow model folder at ``dst``."""
    from soraflow.models.io import save_model

    config, state = convert_opensora_state_dict(
        load_checkpoint_file(src), legacy_rope_before_norm=legacy_rope_before_norm, num_heads=num_heads, dtype=dtype
    )
    with torch.device("meta"):
        model = STDiT2(config)
    model.load_state_dict(state, strict=True, assign=True)
    save_model(model, dst, extra={"converted_from": str(src), "source": "Open-Sora 1.1 STDiT2"})
    return config
