"""Building blocks of STDiT2: embedders, attention (spatial, temporal with RoPE, cross),
MLP, the 2-D sin-cos position and the adaLN-single final layer.

Tensors in the transformer are laid out ``[B, T, S, C]`` (batch, frames, spatial tokens of
one frame, channels) so that the spatial attention sees ``[B*T, S, C]`` as a free view.
All attention goes through :func:`attention`: :func:`torch.nn.functional.scaled_dot_product_attention`,
except on CPU in bf16, where short sequences are attended unfused (see there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soraflow.models.ops import GELUTanh, Linear, modulate, modulated_linear
from soraflow.models.qk_heads import qkv_heads, rotate_pairs

__all__ = [
    "Attention",
    "attention",
    "block_diagonal_mask",
    "pack_factor",
    "unfused_attention",
    "CaptionEmbedder",
    "CrossAttention",
    "FinalLayer",
    "Mlp",
    "PatchEmbed",
    "PooledCaptionEmbedder",
    "RMSNorm",
    "RotaryEmbedding",
    "TimestepEmbedder",
    "modulate",
    "sincos_2d_position",
    "timestep_embedding",
]


#: On CPU in bf16, attention over at most this many keys runs unfused (see :func:`attention`).
UNFUSED_MAX_KEYS = 384
#: Softmax rows of at most this many entries go through :class:`ShortRowSoftmax`.
SHORT_ROW_MAX = 8


def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """``scaled_dot_product_attention``, with two CPU bf16 (autocast) paths measured faster.

    PyTorch's CPU flash-attention kernel is slow in bf16 on short sequences: forward+backward
    over 8-64 keys (STDiT2's spatial, temporal and cross attention at small latents) took
    2-10x as long as two bf16 batched matmuls with an fp32 softmax between them
    (``benchmarks/attention.py``). So on CPU in bf16, attention over at most
    :data:`UNFUSED_MAX_KEYS` keys is computed unfused (:func:`unfused_attention`: the
    ``[N, L]`` score matrix is small there); longer sequences keep the fused kernel, which
    wins from about 512 keys on, in fp32 when heads are narrower than 64 channels (the bf16
    kernel is 4-13x slower there). On CUDA, and in fp32, SDPA's kernels are the fast ones.
    """
    autocast = torch.is_autocast_enabled("cpu")
    if q.device.type == "cpu" and (autocast or torch.bfloat16 in (q.dtype, k.dtype, v.dtype)):
        with torch.autocast("cpu", enabled=False):
            if k.shape[-2] <= UNFUSED_MAX_KEYS:
                dtype = torch.get_autocast_dtype("cpu") if autocast else torch.bfloat16
                return unfused_attention(q.to(dtype), k.to(dtype), v.to(dtype), attn_mask)
            if q.shape[-1] < 64:
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask)
                return out.to(v.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def block_diagonal_mask(groups: int, tokens: int, device: torch.device | str | None = None) -> Tensor:
    """``[groups*tokens, groups*tokens]`` bool, True inside each of ``groups`` diagonal blocks of
    ``tokens``: ``groups`` sequences packed into one attend only within themselves."""
    block = torch.arange(groups * tokens, device=device) // tokens
    return block[:, None] == block[None, :]


def pack_factor(sequences: int, tokens: int, pack_tokens: int) -> int:
    """The largest ``g`` dividing ``sequences`` with ``g * tokens <= pack_tokens`` (1: no packing)."""
    best = 1
    for g in range(2, min(pack_tokens // max(tokens, 1), sequences) + 1):
        if sequences % g == 0:
            best = g
    return best


def unfused_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """``softmax(q k^T / sqrt(d) + mask) v`` as two matmuls in the inputs' dtype and a softmax in
    fp32 (SDPA's semantics: a bool mask is True where attending is allowed)."""
    scores = torch.matmul(q, k.transpose(-1, -2)).float().mul_(q.shape[-1] ** -0.5)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    probs = ShortRowSoftmax.apply(scores) if scores.shape[-1] <= SHORT_ROW_MAX else scores.softmax(-1)
    return torch.matmul(probs.to(v.dtype), v)


class ShortRowSoftmax(torch.autograd.Function):
    """Softmax over the last dim from max / exp / sum, with the closed-form backward
    ``y * (g - sum(g * y))``: same values as ``softmax(-1)`` (to fp32 rounding).

    PyTorch's CPU softmax kernel is slow on rows shorter than a vector register: over 8 keys
    (the demo's temporal attention, 8 frames) forward + backward took 1.6 ms for 128 x 6 x 8
    rows against 0.54 ms this way; from 16 keys on the built-in kernel is faster (0.34 vs 0.74 ms),
    hence :data:`SHORT_ROW_MAX`. A fully masked row gives NaN, as ``softmax`` does.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        e = (x - x.amax(-1, keepdim=True)).exp_()
        y = e.div_(e.sum(-1, keepdim=True))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return y * (grad - (grad * y).sum(-1, keepdim=True))


def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """GLIDE/DiT sinusoid of (possibly fractional) scalars ``t`` -> ``[*t.shape, dim]`` as
    ``[cos, sin]``, always computed in fp32 (bf16 cannot tell timestep 998 from 1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[..., None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[..., :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Scalar -> sinusoid(256) -> Linear -> SiLU -> Linear. Also the size/fps/frames embedder."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: Tensor) -> Tensor:
        freq = timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class CaptionEmbedder(nn.Module):
    """Text-encoder states -> model width (MLP with tanh GELU); holds the null caption.

    ``null_embedding`` is a buffer drawn once at init (``randn / sqrt(C)``), never trained,
    saved with the weights: Open-Sora's ``y_embedding``, used for caption dropout and CFG.
    """

    def __init__(self, in_channels: int, hidden_size: int, max_length: int) -> None:
        super().__init__()
        self.fc1 = Linear(in_channels, hidden_size)
        self.act = GELUTanh()
        self.fc2 = Linear(hidden_size, hidden_size)
        self.register_buffer("null_embedding", torch.randn(max_length, in_channels) / in_channels**0.5)

    def forward(self, y: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(y)))


class PooledCaptionEmbedder(nn.Module):
    """Masked mean of the caption's token states -> Linear -> SiLU -> Linear (model width).

    A caption row without any real token pools to zeros (no NaN)."""

    def __init__(self, in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, y: Tensor, mask: Tensor | None = None) -> Tensor:
        """``y [B, L, C_caption]``, ``mask [B, L]`` (nonzero = real token) -> ``[B, hidden]``."""
        if mask is None:
            pooled = y.mean(dim=1)
        else:
            w = (mask != 0).to(y.dtype)[..., None]
            pooled = (y * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
        return self.mlp(pooled)


class PatchEmbed(nn.Module):
    """Non-overlapping 3-D patches -> tokens ``[B, T, S, C]``.

    Mathematically Open-Sora's ``Conv3d(kernel=stride=patch)`` (same weight shape), computed as
    one matmul on the patch-major input, which writes tokens directly in ``[B, T, S, C]``
    instead of a ``[B, C, T, H, W]`` map that then needs a transpose.
    """

    def __init__(self, patch_size: tuple[int, int, int], in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.weight = nn.Parameter(torch.empty(hidden_size, in_channels, *patch_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        nn.init.xavier_uniform_(self.weight.view(hidden_size, -1))

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        b, c, t, h, w = x.shape
        pt, ph, pw = self.patch_size
        pad_t, pad_h, pad_w = (-t) % pt, (-h) % ph, (-w) % pw
        if pad_t or pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h, 0, pad_t))
        nt, nh, nw = (t + pad_t) // pt, (h + pad_h) // ph, (w + pad_w) // pw
        x = x.reshape(b, c, nt, pt, nh, ph, nw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
        x = x.reshape(b, nt, nh * nw, c * pt * ph * pw)
        tokens = F.linear(x, self.weight.view(self.weight.shape[0], -1), self.bias)
        return tokens, (nt, nh, nw)


class RMSNorm(nn.Module):
    """RMSNorm over the last dim with a learned gain (Open-Sora's LlamaRMSNorm, eps 1e-6).

    Statistics are accumulated in fp32 by the fused kernel whatever the input dtype.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding over a sequence axis (lucidrains' ``rotary_embedding_torch``
    layout: frequencies ``theta^(-2i/d)``, each used for the interleaved channel pair
    ``(2i, 2i+1)``).

    ``freqs`` is a non-trainable parameter, as in the original (it is in the state dict
    and in the parameter count: 36 of the 767,452,100 of STDiT2-XL/2).
    """

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)
        self.freqs = nn.Parameter(freqs, requires_grad=False)

    def cos_sin(self, length: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
        """``cos, sin`` of shape ``[length, dim]`` (fp32), each angle repeated for its pair."""
        pos = torch.arange(length, device=device or self.freqs.device, dtype=torch.float32)
        angles = pos[:, None] * self.freqs.float()[None]
        angles = angles.repeat_interleave(2, dim=-1)
        return angles.cos(), angles.sin()

    @staticmethod
    def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate ``x [..., L, dim]`` by position: ``x * cos + rotate_half(x) * sin``."""
        return torch.addcmul(x * cos.to(x.dtype), rotate_pairs(x), sin.to(x.dtype))


class Attention(nn.Module):
    """Multi-head self-attention with fused qkv, optional per-head q/k RMSNorm and RoPE.

    ``legacy_rope_before_norm`` reproduces Open-Sora 1.1 (rotate, then normalise); the
    default normalises, then rotates (the order the RoPE relative-position property needs).

    ``pack_tokens`` (CUDA only): short sequences are attended ``g`` at a time as one sequence of
    up to ``pack_tokens`` tokens with a block-diagonal mask (:func:`pack_factor`). Same result;
    the fused kernels work in tiles of 64-128 queries and keys, so 16-frame temporal sequences
    alone leave most of each tile empty (measured in ``benchmarks/attention_backends.py``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qk_norm: bool = True,
        legacy_rope_before_norm: bool = False,
        pack_tokens: int = 0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = Linear(dim, dim * 3, bias=True)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else None
        self.legacy_rope_before_norm = legacy_rope_before_norm
        self.pack_tokens = pack_tokens
        #: Device types that pack (the CPU paths gain nothing from it: see :func:`attention`).
        self.pack_devices = ("cuda",)
        self.proj = Linear(dim, dim)

    def _norm(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``x [B, N, C]`` -> ``[B, N, C]`` (qkv, attention, output projection)."""
        return self.proj(self.attend(self.qkv(x), rope))

    def attend(self, qkv: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Attention on fused projections ``qkv [B, N, 3C]`` -> ``[B, N, C]`` (before ``proj``)."""
        b, n, c3 = qkv.shape
        packs = self.pack_tokens and qkv.device.type in self.pack_devices
        g = pack_factor(b, n, self.pack_tokens) if packs else 1
        if g == 1:
            return self._attend(qkv, rope)
        if rope is not None:
            rope = (rope[0].repeat(g, 1), rope[1].repeat(g, 1))
        packed = qkv.reshape(b // g, g * n, c3)
        return self._attend(packed, rope, block_diagonal_mask(g, n, qkv.device)).view(b, n, c3 // 3)

    def _attend(self, qkv: Tensor, rope: tuple[Tensor, Tensor] | None, mask: Tensor | None = None) -> Tensor:
        b, n, c3 = qkv.shape
        if self.q_norm is not None and not self.legacy_rope_before_norm and not torch.compiler.is_compiling():
            # eager: one function for heads, norm and rotation (soraflow.models.qk_heads); compiled
            # blocks keep the composed ops below, which inductor fuses itself
            q, k, v = qkv_heads(qkv, self.num_heads, self.q_norm.weight, self.k_norm.weight, self.q_norm.eps, rope)
            return attention(q, k, v, mask).transpose(1, 2).reshape(b, n, c3 // 3)
        qkv = qkv.view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, heads, N, head_dim], strided views (no copy)
        if rope is not None and self.legacy_rope_before_norm:
            q, k = RotaryEmbedding.rotate(q, *rope), RotaryEmbedding.rotate(k, *rope)
            q, k = self._norm(q, k)
        else:
            q, k = self._norm(q, k)
            if rope is not None:
                q, k = RotaryEmbedding.rotate(q, *rope), RotaryEmbedding.rotate(k, *rope)
        out = attention(q, k, v, mask)
        return out.transpose(1, 2).reshape(b, n, c3 // 3)


class CrossAttention(nn.Module):
    """Queries from video tokens, keys/values from caption tokens; padding masked out.

    ``attn_mask`` is ``[B, 1, 1, L]`` bool (True = attend). A caption row with no real token
    is given an all-True mask and zero values, so its output is exactly zero (no NaN).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_linear = Linear(dim, dim)
        self.kv_linear = Linear(dim, dim * 2)
        self.proj = Linear(dim, dim)

    def forward(
        self, x: Tensor, cond: Tensor, attn_mask: Tensor | None = None, value_keep: Tensor | None = None
    ) -> Tensor:
        b, n, c = x.shape
        q = self.q_linear(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv_linear(cond).view(b, cond.shape[1], 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        if value_keep is not None:
            v = v * value_keep.to(v.dtype)
        out = attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Linear -> GELU(tanh) -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = GELUTanh()
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class FinalLayer(nn.Module):
    """LayerNorm, shift/scale from a learned ``[2, C]`` table plus the timestep embedding,
    Linear to ``patch volume * out_channels`` (PixArt's T2IFinalLayer)."""

    def __init__(self, hidden_size: int, patch_volume: int, out_channels: int) -> None:
        super().__init__()
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size**0.5)
        self.linear = Linear(hidden_size, patch_volume * out_channels)
        self.fold_modulation = True

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``x [B, T, S, C]``; ``t [B, T', C]`` with T' = 1 or T (per-frame timesteps)."""
        b, frames, s, c = x.shape
        mod = self.scale_shift_table[None, None] + t[:, :, None, :]  # [B, T', 2, C]
        h = F.layer_norm(x, (c,), eps=1e-6)
        if t.shape[1] == 1:
            out = modulated_linear(h.view(b, frames * s, c), self.linear, mod[:, 0, 0], mod[:, 0, 1], self.fold_modulation)
            return out.view(b, frames, s, -1)
        return self.linear(modulate(h, mod[:, :, 0, None], mod[:, :, 1, None]))


def sincos_2d_position(
    grid_h: int, grid_w: int, dim: int, scale: Tensor, base_size: int | None = None
) -> Tensor:
    """Resolution-aware 2-D sin-cos position ``[B, grid_h * grid_w, dim]`` (fp32).

    As Open-Sora's ``PositionEmbedding2D``: positions are ``arange(n) / scale * base_size / n``
    per axis (``scale`` per sample, ``[B]``), the first half of the channels encode the
    column (w) coordinate and the second half the row (h), each as ``[sin, cos]`` with
    frequencies ``10000^(-k / (dim/4))``; tokens are ordered row-major (h, then w).
    """
    device = scale.device
    quarter = dim // 4
    inv_freq = 1.0 / (10000 ** (torch.arange(0, quarter, dtype=torch.float32, device=device) / quarter))
    ys = torch.arange(grid_h, dtype=torch.float32, device=device)
    xs = torch.arange(grid_w, dtype=torch.float32, device=device)
    if base_size is not None:
        ys = ys * (base_size / grid_h)
        xs = xs * (base_size / grid_w)
    inv_scale = (1.0 / scale.float())[:, None, None]  # [B, 1, 1]
    ang_w = xs[None, :, None] * inv_freq * inv_scale  # [B, W, q]
    ang_h = ys[None, :, None] * inv_freq * inv_scale  # [B, H, q]
    emb_w = torch.cat([ang_w.sin(), ang_w.cos()], dim=-1)  # [B, W, dim/2]
    emb_h = torch.cat([ang_h.sin(), ang_h.cos()], dim=-1)  # [B, H, dim/2]
    b = scale.shape[0]
    emb = torch.cat(
        [emb_w[:, None, :, :].expand(b, grid_h, grid_w, -1), emb_h[:, :, None, :].expand(b, grid_h, grid_w, -1)],
        dim=-1,
    )
    return emb.reshape(b, grid_h * grid_w, dim)
