"""The frozen video VAE: a diffusers image ``AutoencoderKL`` applied to every frame.

This is Open-Sora 1.1's choice (``stabilityai/sd-vae-ft-ema`` per frame, latents times
0.18215): a video ``[B, 3, T, H, W]`` in [-1, 1] becomes latents ``[B, C, T, H/f, W/f]``.
Frames are encoded in micro-batches so memory stays bounded however long the clip.

Latents are ``(z - shift_factor) * scaling_factor`` with ``shift_factor`` from the saved config
(0 when absent, as for the SD VAEs), so the diffusion model sees roughly unit-variance inputs.
A config with per-channel ``latents_mean`` / ``latents_std`` (diffusers' fields, as in
Playground v2.5) gives ``(z - latents_mean) * scaling_factor / latents_std`` per channel instead:
every channel then reaches the diffusion model at unit variance, so a channel that carries
little energy (but, say, an object's colour) is not drowned by the noise long before the others.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from soraflow.encoders.config import VAEConfig
from soraflow.encoders.resolve import load_offline, resolve_pretrained, torch_dtype

logger = logging.getLogger(__name__)

__all__ = ["VideoVAE", "load_autoencoder_kl", "load_vae"]


def load_autoencoder_kl(
    pretrained: str | Path,
    subfolder: str | None = None,
    dtype: str | torch.dtype = "float32",
):
    """Load a diffusers ``AutoencoderKL`` from a folder, ``package:<module>`` or cached hub id."""
    from diffusers import AutoencoderKL

    resolved = resolve_pretrained(str(pretrained))
    # low_cpu_mem_usage=False: the fast path needs `accelerate` (not installed) and warns otherwise.
    kwargs = {"dtype": torch_dtype(dtype), "low_cpu_mem_usage": False}
    if subfolder:
        kwargs["subfolder"] = subfolder
    return load_offline(resolved, AutoencoderKL.from_pretrained, "vae", **kwargs)


class VideoVAE(nn.Module):
    """Frozen per-frame VAE for videos. Parameters never require grad; the module stays in eval.

    ``encode`` / ``decode`` run without autograd and return float32 tensors on the VAE's
    device, whatever dtype the VAE computes in.
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        scaling_factor: float | None = None,
        micro_batch_frames: int = 32,
        sample_posterior: bool = False,
    ) -> None:
        super().__init__()
        self.module = autoencoder
        cfg = autoencoder.config
        self.scaling_factor = float(scaling_factor if scaling_factor is not None else cfg.scaling_factor)
        shift = getattr(cfg, "shift_factor", None)
        self.shift_factor = float(shift) if shift is not None else 0.0
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if (mean is None) != (std is None):
            raise ValueError("the VAE config has only one of latents_mean / latents_std")
        if mean is not None:
            channels = int(cfg.latent_channels)
            if len(mean) != channels or len(std) != channels or min(std) <= 0:
                raise ValueError(f"latents_mean / latents_std need {channels} values (std > 0)")
            # per-channel shift and scale, [1, C, 1, 1]; replaces the scalar shift_factor
            self.register_buffer("_channel_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("_channel_scale", (self.scaling_factor / torch.tensor(std, dtype=torch.float32)).view(1, -1, 1, 1), persistent=False)
        else:
            self._channel_mean = self._channel_scale = None
        self.micro_batch_frames = int(micro_batch_frames)
        self.sample_posterior = bool(sample_posterior)
        self.module.requires_grad_(False)
        self.module.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        pretrained: str | Path,
        subfolder: str | None = None,
        scaling_factor: float | None = None,
        micro_batch_frames: int = 32,
        sample_posterior: bool = False,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
    ) -> VideoVAE:
        ae = load_autoencoder_kl(pretrained, subfolder=subfolder, dtype=dtype)
        vae = cls(ae, scaling_factor, micro_batch_frames, sample_posterior)
        return vae.to(device=torch.device(device), dtype=torch_dtype(dtype))

    # ------------------------------------------------------------------ properties
    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.module.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.module.config.latent_channels)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    def latent_size(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Latent ``(T, h, w)`` for a video of that size (H, W must be multiples of the factor)."""
        f = self.downsample_factor
        if height % f or width % f:
            raise ValueError(f"frame size {height}x{width} is not a multiple of the VAE factor {f}")
        return num_frames, height // f, width // f

    def train(self, mode: bool = True) -> VideoVAE:
        """Frozen: stays in eval mode whatever a parent module asks."""
        return super().train(False)

    # ------------------------------------------------------------------ encode / decode
    def _normalise(self, z: torch.Tensor) -> torch.Tensor:
        """Raw posterior ``z [N, C, h, w]`` -> the latents the diffusion model sees."""
        if self._channel_mean is None:
            return (z - self.shift_factor) * self.scaling_factor
        return (z - self._channel_mean.to(z.device)) * self._channel_scale.to(z.device)

    def _denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        if self._channel_mean is None:
            return latents / self.scaling_factor + self.shift_factor
        return latents / self._channel_scale.to(latents.device) + self._channel_mean.to(latents.device)

    def _chunks(self, n: int) -> list[slice]:
        step = self.micro_batch_frames if self.micro_batch_frames > 0 else n
        return [slice(i, min(i + step, n)) for i in range(0, n, step)]

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[N, 3, H, W]`` in [-1, 1] -> scaled latents ``[N, C, h, w]`` (float32)."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected frames [N, 3, H, W], got {tuple(frames.shape)}")
        self.latent_size(1, frames.shape[-2], frames.shape[-1])
        out = []
        for sl in self._chunks(frames.shape[0]):
            x = frames[sl].to(device=self.device, dtype=self.dtype)
            dist = self.module.encode(x).latent_dist
            z = dist.sample(generator=generator) if self.sample_posterior else dist.mean
            out.append(self._normalise(z.float()))
        return torch.cat(out, dim=0)

    @torch.no_grad()
    def decode_frames(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Scaled latents ``[N, C, h, w]`` -> frames ``[N, 3, H, W]`` in [-1, 1] (float32)."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents [N, {self.latent_channels}, h, w], got {tuple(latents.shape)}")
        out = []
        for sl in self._chunks(latents.shape[0]):
            z = self._denormalise(latents[sl].to(device=self.device, dtype=torch.float32))
            x = self.module.decode(z.to(self.dtype)).sample.float()
            out.append(x.clamp(-1.0, 1.0) if clamp else x)
        return torch.cat(out, dim=0)

    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[B, 3, T, H, W]`` in [-1, 1] -> latents ``[B, C, T, H/f, W/f]``."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected video [B, 3, T, H, W], got {tuple(video.shape)}")
        b, _, t, h, w = video.shape
        frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, 3, h, w)
        z = self.encode_frames(frames, generator=generator)
        return z.reshape(b, t, *z.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()

    def decode(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Latents ``[B, C, T, h, w]`` -> video ``[B, 3, T, h*f, w*f]`` in [-1, 1]."""
        if latents.ndim != 5:
            raise ValueError(f"expected latents [B, C, T, h, w], got {tuple(latents.shape)}")
        b, c, t, h, w = latents.shape
        z = latents.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        x = self.decode_frames(z, clamp=clamp)
        return x.reshape(b, t, *x.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.encode(video)


def load_vae(
    cfg: VAEConfig,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> VideoVAE:
    """The VAE that params name: ``vae.pretrained``, or the demo-trained one at ``vae.demo_output``."""
    source = cfg.source
    if cfg.pretrained is None and not Path(source).is_dir():
        from soraflow.encoders.resolve import EncoderNotFoundError

        raise EncoderNotFoundError(
            f"vae.pretrained is null and the demo VAE folder vae.demo_output={source!r} does not exist; "
            "run the `vae` stage first (it trains the demo VAE) or set vae.pretrained"
        )
    vae = VideoVAE.from_pretrained(
        source,
        subfolder=cfg.subfolder,
        scaling_factor=cfg.scaling_factor,
        micro_batch_frames=cfg.micro_batch_frames,
        sample_posterior=cfg.sample_posterior,
        device=device,
        dtype=dtype if dtype is not None else cfg.dtype,
    )
    logger.info(
        "VAE %s: factor %d, %d latent channels, scaling %.5f, shift %.5f",
        source, vae.downsample_factor, vae.latent_channels, vae.scaling_factor, vae.shift_factor,
    )
    return vae
