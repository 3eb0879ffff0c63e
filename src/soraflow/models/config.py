"""Model configuration: the architecture of one STDiT2 (:class:`STDiT2Config`), the preset
table (``STDiT2-XL/2`` and smaller), and the ``model:`` section of params.yaml
(:class:`ModelConfig`), which names a preset plus overrides.

The architecture config is what a saved model folder carries in ``config.json``; it is
complete (no field depends on the text encoder at load time). The params section may leave
``caption_channels`` / ``caption_max_length`` empty (``null``): they are then filled in from
the text encoder when the model is built (:meth:`ModelConfig.resolve`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from soraflow.config_base import ConfigError, StrictModel

__all__ = ["PRESETS", "ModelConfig", "STDiT2Config", "preset_config"]


class STDiT2Config(StrictModel):
    """Every size and switch of one STDiT2 network (serialised as a model folder's ``config.json``).

    Defaults are the original ``STDiT2-XL/2`` of Open-Sora 1.1 with soraflow's fixes on
    (q/k normalised *then* rotated; aspect ratio is H/W).
    """

    #: Latent channels (4 for the SD VAE).
    in_channels: int = Field(4, ge=1, le=64)
    #: Patch size (T, H, W); the original uses (1, 2, 2).
    patch_size: tuple[int, int, int] = (1, 2, 2)
    hidden_size: int = Field(1152, ge=12, le=8192)
    depth: int = Field(28, ge=1, le=128)
    num_heads: int = Field(16, ge=1, le=128)
    mlp_ratio: float = Field(4.0, gt=0.0, le=16.0)
    #: Predict the variance too (output 2 * in_channels channels: noise, then variance values).
    learn_sigma: bool = True
    #: Width of the text encoder's token states (4096 for T5-XXL, 384 for all-MiniLM-L6-v2).
    caption_channels: int = Field(4096, ge=1, le=16384)
    #: Tokens per caption (length of the null caption; T5 used 200 in 1.1).
    caption_max_length: int = Field(200, ge=1, le=4096)
    #: RMSNorm on q and k per head (on in Open-Sora 1.1).
    qk_norm: bool = True
    #: Open-Sora 1.1's order: RoPE applied *before* the q/k RMSNorm. Only for loading 1.1
    #: weights; soraflow normalises, then rotates.
    legacy_rope_before_norm: bool = False
    #: Pixel size of the square the 2-D position grid is calibrated on (``input_sq_size``).
    base_pixel_size: int = Field(512, ge=1, le=16384)
    #: fps used for micro-conditioning when the caller gives none.
    default_fps: float = Field(24.0, gt=0.0, le=1000.0)
    #: Recompute each block in the backward pass (torch.utils.checkpoint, non-reentrant).
    grad_checkpointing: bool = False
    #: On CUDA, the temporal attention's short sequences (one per spatial position, T frames)
    #: are attended several at a time as one sequence of at most this many tokens with a
    #: block-diagonal mask: the same result from fuller kernel tiles. 0: one sequence per call.
    temporal_attention_pack: int = Field(128, ge=0, le=65536)
    #: Zero-initialise the temporal attention's output projection (the original: a fresh model's
    #: temporal branch is the identity, so image weights load into a working video model).
    #: False: xavier-initialised like the spatial one, for training from scratch.
    zero_init_temporal: bool = True
    #: Span of the "spatial" self-attention: ``frame`` (the original: tokens of one frame) or
    #: ``clip`` (every token of the clip, with RoPE over frames: full 3-D attention, so a token can
    #: read where the object was in another frame and at another place in one step; the
    #: temporal attention stays). Same parameters either way, so weights load across modes.
    spatial_attention: Literal["frame", "clip"] = "frame"
    #: Add the caption's pooled (masked-mean) state, through an MLP, to the timestep embedding
    #: that drives every adaLN modulation (SD3 / Flux's "vector" conditioning). Cross-attention
    #: only *adds* caption information to tokens; through the modulation the caption also
    #: scales and gates each block's inputs. Off in Open-Sora 1.1.
    pooled_caption: bool = False
    #: Add a fixed 1-D sin-cos embedding of the frame index to every token (Open-Sora 1.0's
    #: STDiT had one; 1.1 relies on RoPE in the temporal attention, which sees only frame
    #: *offsets*). With it a token knows which frame it is in, so "the object is on the left in
    #: the first frame" is a per-token fact the caption can set. No parameters. Off in 1.1.
    temporal_position: bool = False

    @field_validator("patch_size")
    @classmethod
    def _patch_positive(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(p < 1 for p in v):
            raise ValueError(f"patch sizes must be >= 1, got {v}")
        return v

    @model_validator(mode="after")
    def _check_widths(self) -> STDiT2Config:
        c, h = self.hidden_size, self.num_heads
        if c % h:
            raise ValueError(f"hidden_size {c} is not divisible by num_heads {h}")
        if (c // h) % 2:
            raise ValueError(f"head dim {c // h} must be even (rotary embedding rotates channel pairs)")
        if c % 12:
            # /3: height, width and aspect-ratio embeddings share the width; /4: 2-D sin-cos position.
            raise ValueError(f"hidden_size {c} must be a multiple of 12 (size embedders and 2-D position)")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)


#: Preset table, DiT style: name -> (hidden_size, depth, num_heads). Patch (1, 2, 2) for all.
#: Widths are multiples of 12 (see :class:`STDiT2Config`), so DiT's L (1024) has no twin here.
PRESETS: dict[str, dict[str, int]] = {
    "STDiT2-T/2": {"hidden_size": 96, "depth": 4, "num_heads": 4},
    "STDiT2-S/2": {"hidden_size": 384, "depth": 12, "num_heads": 6},
    "STDiT2-B/2": {"hidden_size": 768, "depth": 12, "num_heads": 12},
    "STDiT2-XL/2": {"hidden_size": 1152, "depth": 28, "num_heads": 16},
}


def preset_config(name: str, **overrides: object) -> STDiT2Config:
    """The :class:`STDiT2Config` of preset ``name`` with ``overrides`` applied (None values ignored)."""
    if name not in PRESETS:
        raise ConfigError(f"model.preset: unknown preset {name!r} (choices: {', '.join(PRESETS)})")
    fields = dict(PRESETS[name])
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return STDiT2Config(**fields)


class ModelConfig(StrictModel):
    """``model:`` section of params.yaml: a preset plus overrides.

    ``caption_channels`` / ``caption_max_length`` = null mean "take them from the text
    encoder" (see :meth:`resolve`).
    """

    preset: str = "STDiT2-T/2"
    hidden_size: int | None = Field(None, ge=12, le=8192)
    depth: int | None = Field(None, ge=1, le=128)
    num_heads: int | None = Field(None, ge=1, le=128)
    mlp_ratio: float | None = Field(None, gt=0.0, le=16.0)
    #: (t, h, w) latent patch; null = the preset's (1, 2, 2). (1, 1, 1) gives 4x the tokens of
    #: /2 presets: finer detail on tiny latents, at about 4x the compute.
    patch_size: tuple[int, int, int] | None = None
    in_channels: int = Field(4, ge=1, le=64)
    learn_sigma: bool = True
    caption_channels: int | None = Field(None, ge=1, le=16384)
    caption_max_length: int | None = Field(None, ge=1, le=4096)
    qk_norm: bool = True
    legacy_rope_before_norm: bool = False
    base_pixel_size: int = Field(512, ge=1, le=16384)
    default_fps: float = Field(24.0, gt=0.0, le=1000.0)
    #: The model's default (saved in config.json); ``train.grad_checkpointing`` also turns it on.
    grad_checkpointing: bool = False
    #: CUDA: temporal sequences attended up to this many tokens at a time (block-diagonal mask); 0 = off.
    temporal_attention_pack: int = Field(128, ge=0, le=65536)
    #: False: the temporal attention output starts xavier-initialised instead of zero (from scratch).
    zero_init_temporal: bool = True
    #: frame (the original) | clip: the spatial attention spans the whole clip (full 3-D attention).
    spatial_attention: Literal["frame", "clip"] = "frame"
    #: true: the pooled caption also drives the adaLN modulation (SD3 / Flux style); off in 1.1.
    pooled_caption: bool = False
    #: true: a fixed sin-cos embedding of the frame index is added to every token (STDiT 1.0 style).
    temporal_position: bool = False
    #: dtype of the weights when built/loaded: fp32 (training; mixed precision is
    #: ``train.mixed_precision``'s autocast) or bf16 (half the memory, inference).
    dtype: Literal["fp32", "bf16"] = "fp32"
    #: A saved model folder (or converted Open-Sora checkpoint folder) to start from; null = fresh init.
    init_from: str | None = None

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r} (choices: {', '.join(PRESETS)})")
        return v

    @model_validator(mode="after")
    def _check_shape(self) -> ModelConfig:
        # Validate the architecture early (with placeholder caption sizes if unresolved).
        try:
            self.resolve(caption_channels=self.caption_channels or 1, caption_max_length=self.caption_max_length or 1)
        except (ValueError, ConfigError) as err:
            raise ValueError(str(err).replace("\n", " ")) from None
        return self

    @property
    def torch_dtype(self):  # -> torch.dtype (torch imported lazily: configs load without it)
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16}[self.dtype]

    def resolve(self, caption_channels: int | None = None, caption_max_length: int | None = None) -> STDiT2Config:
        """The architecture, with caption sizes from this section or else from the text encoder."""
        channels = self.caption_channels if self.caption_channels is not None else caption_channels
        length = self.caption_max_length if self.caption_max_length is not None else caption_max_length
        if channels is None:
            raise ConfigError("model.caption_channels: null and no text encoder width given")
        if length is None:
            raise ConfigError("model.caption_max_length: null and no text encoder length given")
        return preset_config(
            self.preset,
            hidden_size=self.hidden_size,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            patch_size=self.patch_size,
            in_channels=self.in_channels,
            learn_sigma=self.learn_sigma,
            caption_channels=channels,
            caption_max_length=length,
            qk_norm=self.qk_norm,
            legacy_rope_before_norm=self.legacy_rope_before_norm,
            base_pixel_size=self.base_pixel_size,
            default_fps=self.default_fps,
            grad_checkpointing=self.grad_checkpointing,
            temporal_attention_pack=self.temporal_attention_pack,
            zero_init_temporal=self.zero_init_temporal,
            spatial_attention=self.spatial_attention,
            pooled_caption=self.pooled_caption,
            temporal_position=self.temporal_position,
        )
