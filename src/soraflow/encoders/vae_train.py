"""Train the demo's own small ``AutoencoderKL`` (no pretrained VAE can be downloaded here).

The demo diffuses tiny frames (32x32 or 64x64) on a 2-core CPU, so its VAE is small: three
levels (factor 4), 4 latent channels, one ResNet layer per block. It is trained on random
crops with per-pixel MSE plus a small KL term, evaluated by reconstruction PSNR on held-out
frames, and saved with ``save_pretrained`` so :func:`soraflow.encoders.vae.load_vae` reads it
like any diffusers VAE. As Stable Diffusion did, the latent statistics set the saved
``scaling_factor`` (1 / std) and, beyond SD, ``shift_factor`` (the mean), so the diffusion
model sees roughly zero-mean, unit-variance latents; with ``per_channel_stats`` the saved
``latents_mean`` / ``latents_std`` standardise every channel on its own instead.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from soraflow.encoders.config import VAEDemoTrainConfig
from soraflow.encoders.vae import VideoVAE
from soraflow.precision import use_bf16_autocast
from soraflow.threads import torch_threads

logger = logging.getLogger(__name__)

__all__ = [
    "VAETrainResult",
    "build_demo_autoencoder",
    "frames_to_uint8_list",
    "prepare_frames",
    "psnr",
    "train_demo_vae",
]

FrameSource = torch.Tensor | np.ndarray | Iterable


# ----------------------------------------------------------------------------- metrics


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, eps: float = 1e-12) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image of a batch ``[N, ...]``.

    ``data_range`` is the span of the pixel values: 2.0 for [-1, 1] (the default), 1.0 for
    [0, 1], 255 for uint8. Identical images give ``10 * log10(range^2 / eps)`` (very large),
    not infinity. Average the result for a data-set figure (mean of per-image PSNR).
    """
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    diff = x.double() - y.double()
    mse = diff.pow(2).flatten(1).mean(dim=1) if diff.ndim > 1 else diff.pow(2).mean().reshape(1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(eps))


# ----------------------------------------------------------------------------- frames


def _to_chw_uint8(frame: torch.Tensor | np.ndarray) -> torch.Tensor:
    """One frame ``[H, W, 3]`` or ``[3, H, W]``, uint8 or float in [-1, 1] -> ``[3, H, W]`` uint8."""
    t = torch.as_tensor(np.asarray(frame)) if not isinstance(frame, torch.Tensor) else frame.detach().cpu()
    if t.ndim != 3:
        raise ValueError(f"expected one frame [H, W, 3] or [3, H, W], got {tuple(t.shape)}")
    if t.shape[-1] == 3 and t.shape[0] != 3:
        t = t.permute(2, 0, 1)
    elif t.shape[0] != 3:
        raise ValueError(f"expected 3 colour channels, got frame shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.contiguous()
    if not t.is_floating_point():
        raise ValueError(f"frames must be uint8 or float in [-1, 1], got {t.dtype}")
    lo, hi = float(t.min()), float(t.max())
    if lo < -1.001 or hi > 1.001:
        raise ValueError(f"float frames must lie in [-1, 1], got values in [{lo:.3f}, {hi:.3f}]")
    return ((t.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def frames_to_uint8_list(frames: FrameSource) -> list[torch.Tensor]:
    """Accept a batch ``[N, H, W, 3]`` / ``[N, 3, H, W]`` (tensor or array, uint8 or float in
    [-1, 1]) or any iterable of single frames; return a list of ``[3, H, W]`` uint8 tensors."""
    if isinstance(frames, (torch.Tensor, np.ndarray)) and frames.ndim != 4:
        raise ValueError(f"expected a batch of frames [N, H, W, 3] or [N, 3, H, W], got {tuple(frames.shape)}")
    return [_to_chw_uint8(f) for f in frames]


def _resize(frame: torch.Tensor, short_side: int) -> torch.Tensor:
    """Antialiased resize of a ``[3, H, W]`` uint8 frame so its shorter side is ``short_side``."""
    h, w = frame.shape[-2:]
    scale = short_side / min(h, w)
    if scale == 1.0:
        return frame
    size = (max(short_side, round(h * scale)), max(short_side, round(w * scale)))
    x = F.interpolate(frame[None].float(), size=size, mode="bilinear", antialias=scale < 1, align_corners=False)
    return x[0].round().clamp(0, 255).to(torch.uint8)


def _to_float(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 127.5 - 1.0


def _group_by_size(frames: Sequence[torch.Tensor]) -> list[list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(tuple(f.shape[-2:]), []).append(i)
    return list(groups.values())


# ----------------------------------------------------------------------------- model


def build_demo_autoencoder(cfg: VAEDemoTrainConfig):
    """A fresh diffusers ``AutoencoderKL`` with the demo's architecture (weights from ``cfg.seed``)."""
    from diffusers import AutoencoderKL

    levels = len(cfg.block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        ae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            latent_channels=cfg.latent_channels,
            norm_num_groups=cfg.norm_num_groups,
            sample_size=cfg.image_size,
            mid_block_add_attention=cfg.mid_block_attention,
            scaling_factor=1.0,
            force_upcast=False,
        )
        # A fresh posterior has log-variance ~0, i.e. unit noise on latents that are still
        # tiny: the decoder would see noise only until the encoder learns to shrink it. Start
        # the log-variance low instead (the KL term is tiny anyway), so learning starts at once.
        with torch.no_grad():
            ae.quant_conv.bias[cfg.latent_channels :].fill_(cfg.init_logvar)
        return ae


def _lr_lambda(cfg: VAEDemoTrainConfig):
    """Linear warm-up, then cosine decay to 10% of the peak rate."""

    def fn(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, cfg.steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def _sample_batch(frames: Sequence[torch.Tensor], size: int, batch_size: int, gen: torch.Generator) -> torch.Tensor:
    """Random frames, random ``size`` x ``size`` crops, random horizontal flips; float [-1, 1]."""
    idx = torch.randint(len(frames), (batch_size,), generator=gen).tolist()
    crops = []
    for i in idx:
        f = frames[i]
        h, w = f.shape[-2:]
        y = int(torch.randint(h - size + 1, (1,), generator=gen))
        x = int(torch.randint(w - size + 1, (1,), generator=gen))
        c = f[:, y : y + size, x : x + size]
        if bool(torch.rand((), generator=gen) < 0.5):
            c = c.flip(-1)
        crops.append(c)
    return _to_float(torch.stack(crops))


# ----------------------------------------------------------------------------- training


_WALL_TIMES = ("seconds", "total_seconds")


@dataclass
class VAETrainResult:
    """What :func:`train_demo_vae` produced; ``metrics()`` is ready for ``mlflow.log_metrics``."""

    path: Path
    psnr: float  # mean per-frame PSNR (dB) of the held-out frames after encode -> decode
    steps: int
    seconds: float  # wall time of the optimisation loop
    total_seconds: float  # including data preparation, evaluation, statistics and saving
    final_loss: float  # mean training loss over the last 10% of steps
    scaling_factor: float
    shift_factor: float
    latent_std: float
    latent_mean: float
    num_train_frames: int
    num_val_frames: int
    downsample_factor: int
    latent_channels: int
    num_parameters: int
    losses: list[float] = field(default_factory=list, repr=False)  # per step
    mse: list[float] = field(default_factory=list, repr=False)  # per step, reconstruction part
    originals: list[torch.Tensor] = field(default_factory=list, repr=False)  # a few held-out frames
    reconstructions: list[torch.Tensor] = field(default_factory=list, repr=False)

    def metrics(self) -> dict[str, float]:
        return {
            "vae_psnr": self.psnr,
            "vae_final_loss": self.final_loss,
            "vae_train_seconds": self.seconds,
            "vae_scaling_factor": self.scaling_factor,
            "vae_shift_factor": self.shift_factor,
            "vae_latent_std": self.latent_std,
            "vae_num_train_frames": float(self.num_train_frames),
            "vae_num_val_frames": float(self.num_val_frames),
        }


def prepare_frames(frames: FrameSource, cfg: VAEDemoTrainConfig) -> list[torch.Tensor]:
    """Frames as ``[3, H, W]`` uint8: resized (shorter side ``resize_short_side``, at least
    ``image_size``) and cropped to multiples of the downsample factor."""
    out = []
    for f in frames_to_uint8_list(frames):
        if cfg.resize_short_side is not None:
            f = _resize(f, cfg.resize_short_side)
        if min(f.shape[-2:]) < cfg.image_size:
            f = _resize(f, cfg.image_size)
        # Crop to multiples of the factor so every frame also fits the VAE whole.
        k = cfg.downsample_factor
        h, w = f.shape[-2:]
        f = f[:, : h - h % k, : w - w % k]
        out.append(f.contiguous())
    return out


@torch.no_grad()
def _evaluate(vae: VideoVAE, frames: Sequence[torch.Tensor], batch: int) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
    """Mean per-frame PSNR of encode -> decode (posterior mean, clamped) and the recons."""
    values, recons = [], [None] * len(frames)
    for group in _group_by_size(frames):
        for s in range(0, len(group), batch):
            ids = group[s : s + batch]
            x = _to_float(torch.stack([frames[i] for i in ids]))
            r = vae.decode_frames(vae.encode_frames(x))
            values.append(psnr(r, x))
            for i, rec in zip(ids, r):
                recons[i] = rec
    return float(torch.cat(values).mean()), [_to_float(f) for f in frames], recons


@torch.no_grad()
def _latent_stats(ae, frames: Sequence[torch.Tensor], batch: int) -> tuple[float, float, list[float], list[float]]:
    """Mean and std of the unscaled posterior means over ``frames``: global, then per channel."""
    total = total_sq = None
    count = 0
    for group in _group_by_size(frames):
        for s in range(0, len(group), batch):
            x = _to_float(torch.stack([frames[i] for i in group[s : s + batch]]))
            z = ae.encode(x).latent_dist.mean.double().transpose(0, 1).flatten(1)  # [C, N*h*w]
            sums, sq = z.sum(dim=1), z.pow(2).sum(dim=1)
            total = sums if total is None else total + sums
            total_sq = sq if total_sq is None else total_sq + sq
            count += z.shape[1]
    mean_c = total / count
    var_c = (total_sq / count - mean_c**2).clamp(min=1e-12)
    mean = float(mean_c.mean())
    var = max(float(total_sq.sum()) / (count * len(mean_c)) - mean * mean, 1e-12)
    return mean, math.sqrt(var), mean_c.tolist(), var_c.sqrt().tolist()


def train_demo_vae(
    frames: FrameSource,
    config: VAEDemoTrainConfig,
    output_dir: str | Path,
    progress: bool = True,
    val_frames: FrameSource | None = None,
    num_examples: int = 8,
) -> VAETrainResult:
    """Train the demo ``AutoencoderKL`` on ``frames`` and save it to ``output_dir``.

    ``frames``: a batch ``[N, H, W, 3]`` or ``[N, 3, H, W]`` (uint8, or float in [-1, 1]) or an
    iterable of single frames, of any sizes. Held-out frames for the PSNR are ``val_frames`` if
    given, else a seeded ``config.val_fraction`` of ``frames`` (at least one). Deterministic for
    a given seed and thread count. The folder holds the diffusers ``config.json`` +
    ``diffusion_pytorch_model.safetensors`` and a ``training.json`` with the figures.
    Runs with ``config.threads`` torch threads and restores the previous count.
    """
    with torch_threads(config.threads):
        return _train_demo_vae(frames, config, output_dir, progress, val_frames, num_examples)


def _train_demo_vae(
    frames: FrameSource,
    config: VAEDemoTrainConfig,
    output_dir: str | Path,
    progress: bool,
    val_frames: FrameSource | None,
    num_examples: int,
) -> VAETrainResult:
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    cfg = config
    t_start = time.perf_counter()
    output_dir = Path(output_dir)
    data = prepare_frames(frames, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    if val_frames is not None:
        train, val = data, prepare_frames(val_frames, cfg)
    else:
        if len(data) < 2:
            raise ValueError(f"need at least 2 frames to hold one out, got {len(data)}")
        perm = torch.randperm(len(data), generator=gen).tolist()
        n_val = min(cfg.max_val_frames, max(1, round(cfg.val_fraction * len(data))), len(data) - 1)
        val = [data[i] for i in perm[:n_val]]
        train = [data[i] for i in perm[n_val:]]
    if not train or not val:
        raise ValueError("no training or no held-out frames")
    val = val[: cfg.max_val_frames]

    ae = build_demo_autoencoder(cfg)
    ae.train()
    n_params = sum(p.numel() for p in ae.parameters())
    logger.info(
        "demo VAE: %d params, factor %d, %d latent channels; %d train / %d held-out frames, %d steps of %d crops %dx%d",
        n_params, cfg.downsample_factor, cfg.latent_channels, len(train), len(val),
        cfg.steps, cfg.batch_size, cfg.image_size, cfg.image_size,
    )
    bf16 = use_bf16_autocast(cfg.mixed_precision, torch.device("cpu"))
    # Channels-last convolutions (oneDNN's fast layout on CPU) in bf16, and in fp32 with
    # fused_kernels, which also takes the fused AdamW kernel (see VAEDemoTrainConfig).
    channels_last = bf16 or cfg.fused_kernels
    layout = torch.channels_last if channels_last else torch.contiguous_format
    ae = ae.to(memory_format=layout)
    if channels_last:
        logger.info(
            "demo VAE: %s, channels-last convolutions%s", "bf16 autocast" if bf16 else "fp32",
            ", fused AdamW" if cfg.fused_kernels else "",
        )
    opt = torch.optim.AdamW(
        ae.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0, fused=cfg.fused_kernels or None
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    losses: list[float] = []
    mses: list[float] = []
    t_loop = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="demo VAE", disable=not progress, unit="step")
    for step in bar:
        x = _sample_batch(train, cfg.image_size, cfg.batch_size, gen).contiguous(memory_format=layout)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            moments = ae.encode(x).latent_dist.parameters
        dist = DiagonalGaussianDistribution(moments.float())  # sampling and KL in fp32
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            rec = ae.decode(z).sample
        mse = F.mse_loss(rec.float(), x)
        kl = 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()
        loss = mse + cfg.kl_weight * kl
        if not torch.isfinite(loss):
            raise FloatingPointError(f"demo VAE loss is {loss.item()} at step {step}; lower vae.demo_train.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        mses.append(mse.item())
        if step % 10 == 0 or step == cfg.steps - 1:
            bar.set_postfix(loss=f"{losses[-1]:.4f}", psnr_batch=f"{10 * math.log10(4 / max(mses[-1], 1e-12)):.1f}")
        if (step + 1) % max(1, cfg.steps // 10) == 0:
            recent = float(np.mean(mses[-max(1, cfg.steps // 10) :]))
            logger.info(
                "demo VAE step %d/%d: loss %.5f, training-batch PSNR %.2f dB, %.2f s/step",
                step + 1, cfg.steps, float(np.mean(losses[-10:])), 10 * math.log10(4 / max(recent, 1e-12)),
                (time.perf_counter() - t_loop) / (step + 1),
            )
    seconds = time.perf_counter() - t_loop
    ae = ae.to(memory_format=torch.contiguous_format)  # saved and used as ordinary contiguous fp32 weights
    ae.eval()

    eval_batch = max(1, cfg.batch_size)
    stats_idx = torch.randperm(len(train), generator=gen)[: cfg.stats_frames].tolist()
    mean, std, channel_mean, channel_std = _latent_stats(ae, [train[i] for i in stats_idx], eval_batch)
    if cfg.per_channel_stats:
        # (z - latents_mean) * scaling_factor / latents_std, per channel (diffusers' convention)
        ae.register_to_config(scaling_factor=1.0, shift_factor=0.0, latents_mean=channel_mean, latents_std=channel_std)
    else:
        ae.register_to_config(scaling_factor=1.0 / std, shift_factor=mean)
    vae = VideoVAE(ae, micro_batch_frames=eval_batch)
    value, originals, recons = _evaluate(vae, val, eval_batch)

    output_dir.mkdir(parents=True, exist_ok=True)
    ae.save_pretrained(output_dir, safe_serialization=True)
    tail = losses[-max(1, len(losses) // 10) :]
    result = VAETrainResult(
        path=output_dir,
        psnr=value,
        steps=cfg.steps,
        seconds=seconds,
        total_seconds=0.0,
        final_loss=float(np.mean(tail)),
        scaling_factor=1.0 if cfg.per_channel_stats else 1.0 / std,
        shift_factor=0.0 if cfg.per_channel_stats else mean,
        latent_std=std,
        latent_mean=mean,
        num_train_frames=len(train),
        num_val_frames=len(val),
        downsample_factor=cfg.downsample_factor,
        latent_channels=cfg.latent_channels,
        num_parameters=n_params,
        losses=losses,
        mse=mses,
        originals=originals[:num_examples],
        reconstructions=recons[:num_examples],
    )
    result.total_seconds = time.perf_counter() - t_start
    # No wall times in the model folder: the same training must write the same bytes, or DVC sees
    # a new ``models/vae`` after every re-run and redoes every later stage (the times go to
    # metrics/vae.json and MLflow through ``result``).
    info = {k: v for k, v in result.__dict__.items() if isinstance(v, (int, float)) and k not in _WALL_TIMES}
    info["config"] = cfg.model_dump(mode="json")
    (output_dir / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    logger.info(
        "demo VAE saved to %s: held-out PSNR %.2f dB, %d steps in %.0f s, latent mean %.3f std %.3f",
        output_dir, value, cfg.steps, seconds, mean, std,
    )
    return result
