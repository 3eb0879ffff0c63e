"""Training-side behaviour: overfitting a batch, per-timestep evaluation, rectified flow, config."""

from __future__ import annotations

import math

import pytest
import torch

from soraflow.config_base import ConfigError, parse_model
from soraflow.diffusion import DiffusionConfig, build_diffusion
from soraflow.diffusion.toy import TinyDenoiser

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def kwargs(batch: int) -> dict:
    g = torch.Generator().manual_seed(11)
    return {"y": torch.randn(batch, 3, 8, generator=g), "mask": torch.ones(batch, 3), "height": 64, "width": 64}


@pytest.mark.parametrize("kind", ["iddpm", "rflow"])
def test_tiny_model_overfits_one_batch(kind):
    """Fixed batch, noise and timesteps: the hybrid (or velocity) loss falls by more than 10x."""
    torch.manual_seed(0)
    d = build_diffusion(DiffusionConfig(type=kind))
    model = TinyDenoiser(latent_channels=4, caption_channels=8, hidden=32)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 3, 6, 6, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([300, 700]) if kind == "iddpm" else torch.tensor([300.0, 700.0])
    x_mask = torch.tensor([[False, True, True], [True, True, True]])
    kw = kwargs(2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        out = d.training_losses(model, x0, kw, x_mask=x_mask, noise=noise, t=t)
        loss = out["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_random_timesteps_and_noise_come_from_the_generator():
    d = build_diffusion(DiffusionConfig())
    model = TinyDenoiser(hidden=8)
    x0 = torch.randn(4, 4, 2, 4, 4)
    a = d.training_losses(model, x0, kwargs(4), generator=torch.Generator().manual_seed(5))
    b = d.training_losses(model, x0, kwargs(4), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a["t"], b["t"]) and torch.equal(a["loss"], b["loss"])
    assert a["t"].dtype == torch.long and int(a["t"].min()) >= 0 and int(a["t"].max()) < 1000


def test_training_timesteps_uniform():
    d = build_diffusion(DiffusionConfig())
    t = d.sample_timesteps(20000, torch.Generator().manual_seed(0), torch.device("cpu"))
    hist = torch.bincount(t // 100, minlength=10).float() / 20000
    assert hist.min() > 0.09 and hist.max() < 0.11


@pytest.mark.parametrize("kind", ["iddpm", "rflow"])
def test_loss_at_timesteps(kind):
    d = build_diffusion(DiffusionConfig(type=kind))
    torch.manual_seed(0)
    model = TinyDenoiser(hidden=8)
    x0 = torch.randn(3, 4, 2, 4, 4)
    noise = torch.randn(x0.shape)
    ts = d.eval_timesteps()
    assert len(ts) == 10 and ts[0] == pytest.approx(1000 / 11, abs=0.5)
    losses = d.loss_at_timesteps(model, x0, kwargs(3), noise=noise)
    assert losses.shape == (10, 3)
    # each row is exactly the training loss at that timestep with the same noise
    direct = d.training_losses(model, x0, kwargs(3), noise=noise, t=torch.full((3,), ts[4]))["loss"]
    torch.testing.assert_close(losses[4], direct.detach())
    custom = d.loss_at_timesteps(model, x0, kwargs(3), timesteps=[10, 500], noise=noise)
    assert custom.shape == (2, 3)


def test_rflow_noising_target_and_clean_conditioning_frames():
    d = build_diffusion(DiffusionConfig(type="rflow"))
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 2, 3, 2, 2, generator=g), torch.randn(2, 2, 3, 2, 2, generator=g)
    t = torch.tensor([250.0, 1000.0])
    x_mask = torch.tensor([[True, False, True], [True, True, True]])
    xt = d.q_sample(x0, t, noise, x_mask)
    torch.testing.assert_close(xt[0, :, 0], 0.75 * x0[0, :, 0] + 0.25 * noise[0, :, 0])
    assert torch.equal(xt[0, :, 1], x0[0, :, 1])  # conditioning frame exactly clean
    torch.testing.assert_close(xt[1], noise[1])

    class Const(torch.nn.Module):
        def forward(self, x, timestep, y, mask=None, x_mask=None, **kw):
            return torch.zeros_like(x)

    out = d.training_losses(Const(), x0, kwargs(2), x_mask=x_mask, noise=noise, t=t)
    assert set(out) == {"loss", "mse", "t"}
    want0 = ((x0 - noise)[0, :, [0, 2]] ** 2).mean()  # velocity target, generated frames only
    assert out["loss"][0].item() == pytest.approx(want0.item(), rel=1e-5)


def test_rflow_logit_normal_timesteps_and_shift():
    d = build_diffusion(DiffusionConfig(type="rflow", rflow={"logit_mean": 0.0, "logit_std": 1.0}))
    t = d.sample_timesteps(20000, torch.Generator().manual_seed(0), torch.device("cpu")) / 1000
    assert 0.0 < t.min() and t.max() < 1.0
    logit = torch.log(t / (1 - t))
    assert logit.mean().item() == pytest.approx(0.0, abs=0.03)
    assert logit.std().item() == pytest.approx(1.0, abs=0.03)

    shifted = build_diffusion(DiffusionConfig(type="rflow", rflow={"resolution_shift": True}))
    t = torch.tensor([500.0, 500.0])
    same = shifted.shift(t, {"height": torch.tensor([512, 512]), "width": 512}, num_frames=1)
    torch.testing.assert_close(same, t)  # ratio 1 at the base size
    big = shifted.shift(t, {"height": 1024, "width": 1024}, num_frames=4)  # ratio 2 * 2 = 4
    torch.testing.assert_close(big, torch.tensor([800.0, 800.0]))  # 4 * 0.5 / (1 + 3 * 0.5)
    with pytest.raises(ValueError, match="height"):
        shifted.shift(t, {}, num_frames=1)
    assert torch.equal(d.shift(t, {}, 4), t)  # off by default


def test_diffusion_config_validation():
    cfg = parse_model(DiffusionConfig, {}, "params.yaml")
    assert (cfg.type, cfg.num_timesteps, cfg.guidance_scale, cfg.cfg_channels) == ("iddpm", 1000, 7.0, None)
    assert cfg.resolved_sampler == "iddpm" and cfg.resolved_steps == 100
    with pytest.raises(ConfigError, match="sampler 'euler' does not work with type 'iddpm'"):
        parse_model(DiffusionConfig, {"sampler": "euler"}, "params.yaml")
    with pytest.raises(ConfigError, match="diffusion|unknown key"):
        parse_model(DiffusionConfig, {"num_steps": 10}, "params.yaml")
    with pytest.raises(ConfigError, match="beta_end"):
        parse_model(DiffusionConfig, {"beta_start": 0.1, "beta_end": 0.01}, "params.yaml")
    with pytest.raises(ConfigError, match="cfg_channels"):
        parse_model(DiffusionConfig, {"cfg_channels": 0}, "params.yaml")


def test_params_yaml_has_both_sections():
    from soraflow.config import load_params

    params = load_params("params.yaml")
    assert params.diffusion.type in ("iddpm", "rflow")
    assert sum(params.masks.mask_ratios.as_dict().values()) == pytest.approx(1.0)
