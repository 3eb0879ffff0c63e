"""STDiT2: the spatial-temporal diffusion transformer of Open-Sora 1.1.

One block = spatial self-attention (per frame; or over the whole clip with RoPE over frames
when ``spatial_attention = "clip"``) -> temporal self-attention (per spatial
position, RoPE over frames) -> cross-attention to the caption -> MLP, with adaLN-single
modulation: one timestep MLP shared by all blocks plus a learned per-block table.
See ``/work/shared/reference/opensora-1.1.md`` part 1 for the original's facts and the
defects fixed here (q/k normalised before RoPE; aspect ratio is H/W).

Call::

    out = model(x, timestep, y, mask=None, x_mask=None, *, height, width,
                num_frames=None, fps=None, ar=None)

``x [B, C_in, T, H, W]`` latents; ``timestep [B]``; ``y [B, L, C_caption]`` (or ``[B, 1, L, C]``);
``mask [B, L]`` (nonzero = real token); ``x_mask [B, T]`` bool, True = frame to generate
(modulated with ``timestep``), False = conditioning frame (modulated with t = 0);
``height``/``width`` ``[B]`` pixel sizes of the video, ``num_frames`` ``[B]`` (default T),
``fps`` ``[B]`` (default ``config.default_fps``), ``ar`` ``[B]`` = H/W (default height/width).
Returns ``[B, 2*C_in, T, H, W]`` (noise, then variance values) when ``learn_sigma``, in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from soraflow.models.config import STDiT2Config
from soraflow.models.layers import (
    Attention,
    CaptionEmbedder,
    CrossAttention,
    FinalLayer,
    Mlp,
    PatchEmbed,
    PooledCaptionEmbedder,
    RotaryEmbedding,
    TimestepEmbedder,
    sincos_2d_position,
    timestep_embedding,
)
from soraflow.models.ops import gated_residual, modulate, modulated_linear

__all__ = ["STDiT2", "STDiT2Block"]

TensorLike = Tensor | float | int | Sequence[float]


class STDiT2Block(nn.Module):
    """Spatial attn, temporal attn (RoPE), cross attn, MLP on tokens ``[B, T, S, C]``."""

    def __init__(self, config: STDiT2Config) -> None:
        super().__init__()
        c, heads = config.hidden_size, config.num_heads
        self.attn = Attention(c, heads, config.qk_norm, config.legacy_rope_before_norm)
        self.attn_temp = Attention(
            c, heads, config.qk_norm, config.legacy_rope_before_norm, pack_tokens=config.temporal_attention_pack
        )
        self.cross_attn = CrossAttention(c, heads)
        self.mlp = Mlp(c, config.mlp_hidden)
        # adaLN-single: per-block learned offsets added to the shared timestep projections.
        self.scale_shift_table = nn.Parameter(torch.randn(6, c) / c**0.5)
        self.scale_shift_table_temporal = nn.Parameter(torch.randn(3, c) / c**0.5)
        #: Fold per-sample shift/scale/gate into per-sample weights (same math, fewer passes
        #: over the tokens). Off = the textbook elementwise modulation (used to count FLOPs).
        self.fold_modulation = True
        self.clip_attention = config.spatial_attention == "clip"

    def forward(
        self,
        x: Tensor,
        y: Tensor,
        t_spatial: Tensor,
        t_temporal: Tensor,
        rope: tuple[Tensor, Tensor],
        attn_mask: Tensor | None = None,
        value_keep: Tensor | None = None,
        rope_clip: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """``x [B, T, S, C]``; ``y [B, L, C]``; ``t_spatial [B, T', 6C]``, ``t_temporal [B, T', 3C]``
        with T' = 1 (one timestep per sample) or T (per-frame timesteps, see ``x_mask``);
        ``rope`` ``[T, head_dim]`` cos/sin over frames; ``rope_clip`` the same per token
        ``[T*S, head_dim]`` (needed when the spatial attention spans the clip)."""
        if t_spatial.shape[1] == 1:
            return self._forward_per_sample(
                x, y, t_spatial[:, 0], t_temporal[:, 0], rope, attn_mask, value_keep, rope_clip
            )
        return self._forward_per_frame(x, y, t_spatial, t_temporal, rope, attn_mask, value_keep, rope_clip)

    def _spatial_groups(self, b: int, t: int, s: int) -> tuple[int, int]:
        """(groups, tokens per group) of the spatial attention: frames, or whole clips."""
        return (b, t * s) if self.clip_attention else (b * t, s)

    def _forward_per_sample(
        self,
        x: Tensor,
        y: Tensor,
        t_spatial: Tensor,
        t_temporal: Tensor,
        rope: tuple[Tensor, Tensor],
        attn_mask: Tensor | None,
        value_keep: Tensor | None,
        rope_clip: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """One modulation per sample: shift/scale/gate may fold into per-sample weights."""
        b, t, s, c = x.shape
        fold = self.fold_modulation
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table + t_spatial.unflatten(-1, (6, c))
        ).unbind(1)  # [B, C] each
        shift_tmp, scale_tmp, gate_tmp = (self.scale_shift_table_temporal + t_temporal.unflatten(-1, (3, c))).unbind(1)

        # 1. spatial self-attention within each frame (or across the clip)
        h = F.layer_norm(x, (c,), eps=1e-6).view(b, t * s, c)
        groups, n = self._spatial_groups(b, t, s)
        qkv = modulated_linear(h, self.attn.qkv, shift_msa, scale_msa, fold).view(groups, n, 3 * c)
        h = self.attn.attend(qkv, rope_clip).view(b, t * s, c)
        x = gated_residual(x, h, self.attn.proj, gate_msa, lambda o: o.view(b, t, s, c), fold)

        # 2. temporal self-attention across frames at each spatial position (RoPE over T)
        h = F.layer_norm(x, (c,), eps=1e-6).transpose(1, 2).reshape(b, s * t, c)
        qkv = modulated_linear(h, self.attn_temp.qkv, shift_tmp, scale_tmp, fold).view(b * s, t, 3 * c)
        h = self.attn_temp.attend(qkv, rope).view(b, s * t, c)
        x = gated_residual(x, h, self.attn_temp.proj, gate_tmp, lambda o: o.view(b, s, t, c).transpose(1, 2), fold)

        # 3. cross-attention to the caption (no norm, plain residual)
        x = x + self.cross_attn(x.reshape(b, t * s, c), y, attn_mask, value_keep).view(b, t, s, c)

        # 4. MLP
        h = F.layer_norm(x, (c,), eps=1e-6).view(b, t * s, c)
        h = self.mlp.act(modulated_linear(h, self.mlp.fc1, shift_mlp, scale_mlp, fold))
        x = gated_residual(x, h, self.mlp.fc2, gate_mlp, lambda o: o.view(b, t, s, c), fold)
        return x

    def _forward_per_frame(
        self,
        x: Tensor,
        y: Tensor,
        t_spatial: Tensor,
        t_temporal: Tensor,
        rope: tuple[Tensor, Tensor],
        attn_mask: Tensor | None,
        value_keep: Tensor | None,
        rope_clip: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Elementwise modulation ``[B, T', 1, C]`` (per-frame when conditioning frames use t = 0)."""
        b, t, s, c = x.shape
        mod = (self.scale_shift_table + t_spatial.unflatten(-1, (6, c))).unsqueeze(2)  # [B, T, 1, 6, C]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.unbind(3)
        mod_t = (self.scale_shift_table_temporal + t_temporal.unflatten(-1, (3, c))).unsqueeze(2)
        shift_tmp, scale_tmp, gate_tmp = mod_t.unbind(3)

        h = modulate(F.layer_norm(x, (c,), eps=1e-6), shift_msa, scale_msa)
        groups, n = self._spatial_groups(b, t, s)
        h = self.attn(h.view(groups, n, c), rope=rope_clip).view(b, t, s, c)
        x = torch.addcmul(x, gate_msa, h)

        h = modulate(F.layer_norm(x, (c,), eps=1e-6), shift_tmp, scale_tmp)
        h = h.transpose(1, 2).reshape(b * s, t, c)
        h = self.attn_temp(h, rope=rope).view(b, s, t, c).transpose(1, 2)
        x = torch.addcmul(x, gate_tmp, h)

        x = x + self.cross_attn(x.reshape(b, t * s, c), y, attn_mask, value_keep).view(b, t, s, c)

        h = modulate(F.layer_norm(x, (c,), eps=1e-6), shift_mlp, scale_mlp)
        x = torch.addcmul(x, gate_mlp, self.mlp(h))
        return x


class STDiT2(nn.Module):
    """The STDiT2 network; see the module docstring for the call."""

    def __init__(self, config: STDiT2Config) -> None:
        super().__init__()
        self.config = config
        c = config.hidden_size
        self.x_embedder = PatchEmbed(config.patch_size, config.in_channels, c)
        self.t_embedder = TimestepEmbedder(c)
        self.t_block = nn.Linear(c, 6 * c)
        self.t_block_temp = nn.Linear(c, 3 * c)
        self.y_embedder = CaptionEmbedder(config.caption_channels, c, config.caption_max_length)
        self.y_pool_embedder = PooledCaptionEmbedder(config.caption_channels, c) if config.pooled_caption else None
        self.rope = RotaryEmbedding(config.head_dim)
        self.blocks = nn.ModuleList([STDiT2Block(config) for _ in range(config.depth)])
        self.final_layer = FinalLayer(c, math.prod(config.patch_size), config.out_channels)
        # micro-conditioning: height & width & aspect ratio (C/3 each) -> spatial branch;
        # number of frames + fps (C each) -> temporal branch.
        self.csize_embedder = TimestepEmbedder(c // 3)
        self.ar_embedder = TimestepEmbedder(c // 3)
        self.fl_embedder = TimestepEmbedder(c)
        self.fps_embedder = TimestepEmbedder(c)
        self.grad_checkpointing = config.grad_checkpointing
        #: Start the residual stream in fp32 under autocast (set by :meth:`compile_blocks`).
        self.fp32_residual = False
        #: Compile the blocks with the spatial token count dynamic from the first call (set by
        #: :meth:`compile_blocks` under PyTorch's automatic dynamic shapes).
        self.dynamic_token_count = False
        self.initialize_weights()

    # ------------------------------------------------------------------ properties
    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def out_channels(self) -> int:
        return self.config.out_channels

    @property
    def learn_sigma(self) -> bool:
        return self.config.learn_sigma

    @property
    def caption_channels(self) -> int:
        return self.config.caption_channels

    @property
    def caption_max_length(self) -> int:
        return self.config.caption_max_length

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return self.config.patch_size

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute every block in the backward pass (saves activation memory)."""
        self.grad_checkpointing = bool(enabled)

    def set_fold_modulation(self, enabled: bool = True) -> None:
        """Allow (default) or forbid folding the adaLN modulation into per-sample weights where
        it is measured faster (see :mod:`soraflow.models.ops`); the maths is the same."""
        for block in self.blocks:
            block.fold_modulation = bool(enabled)
        self.final_layer.fold_modulation = bool(enabled)

    def compile_blocks(self, **kwargs: object) -> None:
        """``torch.compile`` every block in place (fuses the elementwise work around the matmuls;
        state-dict keys unchanged). Identical blocks share the compiled code; a new latent
        shape recompiles. ``train.compile`` turns it on (the demo does: 1.5-2 min of compiling, README).

        Under autocast the residual stream then starts in fp32: the embedding gives bf16 tokens
        but every block's gated residual add returns fp32 (the gates are fp32), so block 0 would
        otherwise see another input dtype than the others and every graph would compile twice
        (demo: 4 graphs instead of 8). Eager models keep the bf16 start, as measured before.

        Under PyTorch's automatic dynamic shapes (no ``dynamic`` given) the spatial token count is
        marked dynamic from the first call: buckets of other aspect ratios then reuse the graph
        instead of recompiling it once more (demo: 3 graphs per rank instead of 4, ~16 s less;
        the weights after 300 steps bitwise equal, README "Stop 40")."""
        self.fp32_residual = True
        self.dynamic_token_count = kwargs.get("dynamic") is None
        for block in self.blocks:
            block.compile(**kwargs)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count; the original's count includes RoPE's 36 frozen ``freqs``."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ init
    def initialize_weights(self) -> None:
        """Open-Sora's init: xavier linears, N(0, 0.02) for the timestep/adaLN/caption MLPs,
        zero for cross-attention out, temporal-attention out and the final linear."""

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        nn.init.xavier_uniform_(self.x_embedder.weight.view(self.x_embedder.weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        for layer in (self.t_embedder.mlp[0], self.t_embedder.mlp[2], self.t_block, self.t_block_temp):
            nn.init.normal_(layer.weight, std=0.02)
        nn.init.normal_(self.y_embedder.fc1.weight, std=0.02)
        nn.init.normal_(self.y_embedder.fc2.weight, std=0.02)
        if self.y_pool_embedder is not None:
            nn.init.normal_(self.y_pool_embedder.mlp[0].weight, std=0.02)
            nn.init.normal_(self.y_pool_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.cross_attn.proj.weight)
            nn.init.zeros_(block.cross_attn.proj.bias)
            if self.config.zero_init_temporal:
                nn.init.zeros_(block.attn_temp.proj.weight)
                nn.init.zeros_(block.attn_temp.proj.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # ------------------------------------------------------------------ captions
    def null_caption(self, batch: int, length: int | None = None) -> tuple[Tensor, Tensor]:
        """The null caption ``(y_null [batch, L, C_caption], mask [batch, L] bool all True)``.

        ``length`` (default ``caption_max_length``) takes the first ``length`` tokens, or pads
        with masked-out zeros beyond the stored ones. Note: Open-Sora read the null caption
        through the prompt's own mask; pass that mask instead of this one to reproduce it.
        The tensor is an expanded view of the buffer: do not write into it.
        """
        emb = self.y_embedder.null_embedding
        length = emb.shape[0] if length is None else int(length)
        mask = torch.ones(batch, length, dtype=torch.bool, device=emb.device)
        if length <= emb.shape[0]:
            return emb[:length].expand(batch, -1, -1), mask
        extra = length - emb.shape[0]
        y = F.pad(emb, (0, 0, 0, extra))
        mask[:, emb.shape[0] :] = False
        return y.expand(batch, -1, -1), mask

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: Tensor,
        timestep: Tensor,
        y: Tensor,
        mask: Tensor | None = None,
        x_mask: Tensor | None = None,
        *,
        height: TensorLike,
        width: TensorLike,
        num_frames: TensorLike | None = None,
        fps: TensorLike | None = None,
        ar: TensorLike | None = None,
    ) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"x must be [B, C, T, H, W], got shape {tuple(x.shape)}")
        b, _, tx, hx, wx = x.shape
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x has {x.shape[1]} channels, the model takes {self.in_channels}")
        device = x.device
        dtype = self.x_embedder.weight.dtype
        c = self.config.hidden_size

        # === micro-conditioning values, [B] fp32 each ===
        height_t = _per_sample(height, b, device, "height")
        width_t = _per_sample(width, b, device, "width")
        frames_t = _per_sample(tx if num_frames is None else num_frames, b, device, "num_frames")
        fps_t = _per_sample(self.config.default_fps if fps is None else fps, b, device, "fps")
        ar_t = height_t / width_t if ar is None else _per_sample(ar, b, device, "ar")

        # === patchify + resolution-aware 2-D position (same for every frame) ===
        tokens, (nt, nh, nw) = self.x_embedder(x.to(dtype))  # [B, T, S, C]
        s = nh * nw
        scale = torch.sqrt(height_t * width_t) / self.config.base_pixel_size
        pos = sincos_2d_position(nh, nw, c, scale, base_size=round(s**0.5))
        tokens = tokens + pos.to(tokens.dtype)[:, None]
        if self.fp32_residual and torch.is_autocast_enabled(device.type):
            tokens = tokens.float()
        if self.config.temporal_position:  # frame index, the same for every token of a frame
            frame_pos = timestep_embedding(torch.arange(nt, device=device, dtype=torch.float32), c)
            tokens = tokens + frame_pos.to(tokens.dtype)[None, :, None, :]

        # === adaLN-single inputs ===
        t_emb = self.t_embedder(_per_sample(timestep, b, device, "timestep"))  # [B, C]
        if y.dim() == 4:
            y = y.squeeze(1)
        if y.dim() != 3 or y.shape[0] != b:
            raise ValueError(f"y must be [B, L, C] with B = {b}, got shape {tuple(y.shape)}")
        if mask is not None and mask.shape != y.shape[:2]:
            raise ValueError(f"mask must be [B, L] = {tuple(y.shape[:2])}, got {tuple(mask.shape)}")
        pooled = None
        if self.y_pool_embedder is not None:  # the caption joins the timestep in every modulation
            pooled = self.y_pool_embedder(y.to(dtype), mask)
            t_emb = t_emb + pooled
        csize = self.csize_embedder(torch.stack([height_t, width_t], dim=1)).flatten(1)  # [B, 2C/3]
        data_info = torch.cat([csize, self.ar_embedder(ar_t)], dim=1)  # [B, C]
        fl = self.fl_embedder(frames_t) + self.fps_embedder(fps_t)  # [B, C]
        t_spatial = self.t_block(F.silu(t_emb + data_info))[:, None]  # [B, 1, 6C]
        t_temporal = self.t_block_temp(F.silu(t_emb + fl))[:, None]  # [B, 1, 3C]
        t_final = t_emb[:, None]  # [B, 1, C]
        if x_mask is not None and tuple(x_mask.shape) != (b, tx):
            raise ValueError(f"x_mask must be [B, T] = {(b, tx)}, got {tuple(x_mask.shape)}")
        if x_mask is not None and x_mask.device.type != "meta" and bool(x_mask.all()):
            x_mask = None  # every frame generated: same maths as no mask, on the faster path
        if x_mask is not None:
            frame_mask = self._frame_mask(x_mask, b, tx, nt, device)  # [B, T, 1] True = generate
            t0 = self.t_embedder(torch.zeros(b, device=device))
            if pooled is not None:
                t0 = t0 + pooled
            t0_spatial = self.t_block(F.silu(t0 + data_info))[:, None]
            t0_temporal = self.t_block_temp(F.silu(t0 + fl))[:, None]
            t_spatial = torch.where(frame_mask, t_spatial, t0_spatial)
            t_temporal = torch.where(frame_mask, t_temporal, t0_temporal)
            t_final = torch.where(frame_mask, t_final, t0[:, None])

        # === caption ===
        y = self.y_embedder(y.to(dtype))  # [B, L, C]
        attn_mask = value_keep = None
        if mask is not None:
            keep = mask != 0
            has_tokens = keep.any(dim=1)  # rows without any real token attend to nothing
            attn_mask = (keep | ~has_tokens[:, None])[:, None, None, :]
            value_keep = has_tokens[:, None, None, None]

        # === transformer ===
        rope = self.rope.cos_sin(nt, device)
        rope_clip = None
        if self.config.spatial_attention == "clip":  # every token rotated by its frame index
            rope_clip = (rope[0].repeat_interleave(s, dim=0), rope[1].repeat_interleave(s, dim=0))
        if self.dynamic_token_count:
            torch._dynamo.maybe_mark_dynamic(tokens, 2)
        use_ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if use_ckpt:
                tokens = checkpoint(
                    block, tokens, y, t_spatial, t_temporal, rope, attn_mask, value_keep, rope_clip, use_reentrant=False
                )
            else:
                tokens = block(tokens, y, t_spatial, t_temporal, rope, attn_mask, value_keep, rope_clip)

        # === final layer + unpatchify ===
        out = self.final_layer(tokens, t_final)  # [B, T, S, pt*ph*pw*C_out]
        return self._unpatchify(out, (nt, nh, nw), (tx, hx, wx)).float()

    # ------------------------------------------------------------------ helpers
    def _frame_mask(self, x_mask: Tensor, b: int, tx: int, nt: int, device: torch.device) -> Tensor:
        m = x_mask.to(device=device, dtype=torch.bool)
        pt = self.patch_size[0]
        if pt > 1:  # a token frame is generated if any of its frames is
            m = F.pad(m, (0, nt * pt - tx), value=False).view(b, nt, pt).any(-1)
        return m[:, :, None]

    def _unpatchify(self, x: Tensor, grid: tuple[int, int, int], size: tuple[int, int, int]) -> Tensor:
        b = x.shape[0]
        nt, nh, nw = grid
        pt, ph, pw = self.patch_size
        co = self.out_channels
        x = x.reshape(b, nt, nh, nw, pt, ph, pw, co).permute(0, 7, 1, 4, 2, 5, 3, 6)
        x = x.reshape(b, co, nt * pt, nh * ph, nw * pw)
        tx, hx, wx = size
        if (nt * pt, nh * ph, nw * pw) != (tx, hx, wx):
            x = x[:, :, :tx, :hx, :wx]
        return x


def _per_sample(value: TensorLike, b: int, device: torch.device, name: str) -> Tensor:
    """A per-sample conditioning value as ``[B]`` fp32 (scalars and ``[1]`` broadcast)."""
    t = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
    if t.numel() == 1:
        return t.expand(b)
    if t.numel() != b:
        raise ValueError(f"{name} must have one value per sample ({b}), got {t.numel()}")
    return t
