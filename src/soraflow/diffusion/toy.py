"""Small real models with the denoiser signature, for tests, demos and smoke runs.

Both follow the contract the diffusion relies on::

    model(x, timestep, y, mask=None, x_mask=None, *, height, width, num_frames=None, fps=None, ar=None)
    model.null_caption(batch) -> (y_null [B, L, C], mask [B, L])

* :class:`TinyDenoiser`: a few 3-D convolutions modulated by the timestep and the mean of the
  (unpadded) caption tokens; frames with ``x_mask`` False get the t = 0 embedding, as STDiT2.
* :class:`GaussianOracle`: the exact optimal prediction when every latent element is i.i.d.
  N(mean, std^2); it lets tests check samplers against known statistics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, [N] -> [N, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TinyDenoiser(nn.Module):
    """A ~10k-parameter conv net: enough to overfit a batch and to exercise every code path."""

    def __init__(
        self,
        latent_channels: int = 4,
        caption_channels: int = 8,
        hidden: int = 32,
        learn_sigma: bool = True,
        null_tokens: int = 4,
    ) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.out_channels = latent_channels * (2 if learn_sigma else 1)
        self.hidden = hidden
        self.t_embed = nn.Sequential(nn.Linear(64, hidden), nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.y_embed = nn.Linear(caption_channels, hidden)
        self.conv_in = nn.Conv3d(latent_channels, hidden, 3, padding=1)
        self.conv_mid = nn.Conv3d(hidden, hidden, 3, padding=1)
        self.conv_out = nn.Conv3d(hidden, self.out_channels, 3, padding=1)
        # A fixed (not learned) null caption, like the original's y_embedding buffer.
        g = torch.Generator().manual_seed(1234)
        self.register_buffer("y_null", torch.randn(null_tokens, caption_channels, generator=g) / caption_channels**0.5)

    def null_caption(self, batch: int) -> tuple[Tensor, Tensor]:
        y = self.y_null[None].expand(batch, -1, -1)
        return y, torch.ones(batch, y.shape[1], dtype=torch.long, device=y.device)

    def forward(
        self,
        x: Tensor,
        timestep: Tensor,
        y: Tensor,
        mask: Tensor | None = None,
        x_mask: Tensor | None = None,
        *,
        height: Tensor | int | None = None,
        width: Tensor | int | None = None,
        num_frames: Tensor | int | None = None,
        fps: Tensor | int | None = None,
        ar: Tensor | float | None = None,
    ) -> Tensor:
        b, _, t_len = x.shape[:3]
        tok = mask.to(y.dtype)[..., None] if mask is not None else torch.ones_like(y[..., :1])
        y_mean = (y * tok).sum(1) / tok.sum(1).clamp(min=1)  # padding does not change the output
        cond = self.y_embed(y_mean)  # [B, hidden]
        t_emb = self.t_embed(timestep_embedding(timestep.reshape(-1).expand(b), 64))  # [B, 2h]
        t_emb = t_emb[:, None, :].expand(b, t_len, -1)
        if x_mask is not None:  # conditioning frames are modulated with t = 0
            t0 = self.t_embed(timestep_embedding(torch.zeros(b, device=x.device), 64))[:, None, :]
            t_emb = torch.where(x_mask[:, :, None], t_emb, t0.expand_as(t_emb))
        scale, shift = t_emb.chunk(2, dim=-1)  # [B, T, h]
        scale = scale.permute(0, 2, 1)[..., None, None]
        shift = (shift.permute(0, 2, 1) + cond[:, :, None])[..., None, None]
        h = F.silu(self.conv_in(x))
        h = h * (1 + scale) + shift
        h = h + F.silu(self.conv_mid(h))
        out = self.conv_out(h)
        if self.out_channels > self.latent_channels:  # keep the learned range in [-1, 1]
            c = self.latent_channels
            out = torch.cat([out[:, :c], torch.tanh(out[:, c:])], dim=1)
        return out


class GaussianOracle(nn.Module):
    """Optimal denoiser for data with i.i.d. N(mean, std^2) elements (ignores the caption).

    ``kind="eps"``: returns E[noise | x_t] for x_t = sqrt(abar) x_0 + sqrt(1 - abar) noise
    (needs ``alphas_cumprod``), plus ``var_value`` in the variance channels when
    ``learn_sigma``. ``kind="velocity"``: returns E[x_0 - noise | x_t] for
    x_t = (1 - t/T) x_0 + (t/T) noise.
    """

    def __init__(
        self,
        mean: float,
        std: float,
        kind: str = "eps",
        alphas_cumprod: Tensor | None = None,
        num_timesteps: int = 1000,
        learn_sigma: bool = True,
        var_value: float = 0.0,
        caption_channels: int = 8,
    ) -> None:
        super().__init__()
        if kind not in ("eps", "velocity"):
            raise ValueError(f"kind must be 'eps' or 'velocity', got {kind!r}")
        if kind == "eps" and alphas_cumprod is None:
            raise ValueError("kind='eps' needs alphas_cumprod")
        self.mean, self.std, self.kind = float(mean), float(std), kind
        self.num_timesteps = num_timesteps
        self.learn_sigma = learn_sigma
        self.var_value = var_value
        self.caption_channels = caption_channels
        self.register_buffer("alphas_cumprod", torch.as_tensor(alphas_cumprod if alphas_cumprod is not None else [1.0], dtype=torch.float64))

    def null_caption(self, batch: int) -> tuple[Tensor, Tensor]:
        return torch.zeros(batch, 1, self.caption_channels), torch.ones(batch, 1, dtype=torch.long)

    def forward(self, x: Tensor, timestep: Tensor, y: Tensor, mask: Tensor | None = None, x_mask: Tensor | None = None, **_: object) -> Tensor:
        shape = (-1,) + (1,) * (x.dim() - 1)
        m, s2 = self.mean, self.std**2
        if self.kind == "eps":
            ab = self.alphas_cumprod[timestep.long().cpu()].to(x.device, torch.float32).reshape(shape)
            a, sig = ab.sqrt(), (1 - ab).sqrt()
            var = a**2 * s2 + sig**2
            pred = sig * (x - a * m) / var
            if self.learn_sigma:
                pred = torch.cat([pred, torch.full_like(pred, self.var_value)], 1)
            return pred
        tau = (timestep.float() / self.num_timesteps).reshape(shape)
        a = 1 - tau
        var = a**2 * s2 + tau**2
        centred = x - a * m
        e_x0 = m + a * s2 * centred / var
        e_noise = tau * centred / var
        return e_x0 - e_noise
