"""Samplers: guidance arithmetic, reproducibility, conditioning frames, known-answer statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from soraflow.diffusion import DiffusionConfig, GuidedDenoiser, activation_steps, build_diffusion, combine_cfg
from soraflow.diffusion.toy import GaussianOracle, TinyDenoiser

SAMPLERS = [("iddpm", "iddpm"), ("iddpm", "dpm-solver"), ("rflow", "euler")]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def kwargs(batch: int, tokens: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "y": torch.randn(batch, tokens, 8, generator=g),
        "mask": torch.ones(batch, tokens, dtype=torch.long),
        "height": torch.full((batch,), 64),
        "width": torch.full((batch,), 64),
        "num_frames": torch.full((batch,), 3),
        "fps": torch.full((batch,), 8),
    }


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return TinyDenoiser(latent_channels=4, caption_channels=8, hidden=16).eval()


class Spy(nn.Module):
    """Wraps a model and records what each call saw."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[dict] = []

    def null_caption(self, batch):
        return self.inner.null_caption(batch)

    def forward(self, x, timestep, y, mask=None, x_mask=None, **kw):
        self.calls.append({"x": x.clone(), "t": timestep.clone(), "y": y.clone(), "mask": None if mask is None else mask.clone(), "x_mask": x_mask, "kw": kw})
        return self.inner(x, timestep, y, mask, x_mask, **kw)


def test_combine_cfg_all_and_three_channels():
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 8, 3, 2, 2, generator=g), torch.randn(2, 8, 3, 2, 2, generator=g)
    full = combine_cfg(cond, uncond, 7.0, 4)
    torch.testing.assert_close(full[:, :4], uncond[:, :4] + 7.0 * (cond[:, :4] - uncond[:, :4]))
    torch.testing.assert_close(full[:, 4:], cond[:, 4:])  # learned variance: the conditional one
    three = combine_cfg(cond, uncond, 7.0, 3)
    torch.testing.assert_close(three[:, :3], full[:, :3])
    torch.testing.assert_close(three[:, 3:], cond[:, 3:])


def test_guided_denoiser_doubles_batch_with_null_caption(tiny):
    spy = Spy(tiny)
    kw = kwargs(2)
    x = torch.randn(2, 4, 3, 4, 4)
    t = torch.tensor([500, 500])
    y_null, m_null = tiny.null_caption(2)
    for channels, n_guided in ((None, 4), (3, 3)):
        spy.calls.clear()
        den = GuidedDenoiser(spy, kw, guidance_scale=5.0, latent_channels=4, cfg_channels=channels)
        guided = den(x, t, None)
        (call,) = spy.calls
        assert call["x"].shape[0] == 4 and torch.equal(call["x"][:2], call["x"][2:])
        assert torch.equal(call["y"][2:, : y_null.shape[1]], y_null)
        assert torch.equal(call["kw"]["height"], torch.full((4,), 64))
        with torch.no_grad():
            cond = tiny(x, t, kw["y"], kw["mask"], height=64, width=64)
            uncond = tiny(x, t, y_null, m_null, height=64, width=64)
        want = uncond[:, :n_guided] + 5.0 * (cond[:, :n_guided] - uncond[:, :n_guided])
        torch.testing.assert_close(guided[:, :n_guided], want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(guided[:, n_guided:], cond[:, n_guided:], rtol=1e-4, atol=1e-5)


def test_guidance_pads_captions_of_different_length(tiny):
    spy = Spy(tiny)
    kw = kwargs(1, tokens=6)
    y_null, m_null = torch.zeros(1, 2, 8), torch.ones(1, 2, dtype=torch.long)
    GuidedDenoiser(spy, kw, guidance_scale=2.0, latent_channels=4, y_null=y_null, mask_null=m_null)(
        torch.randn(1, 4, 3, 4, 4), torch.tensor([3]), None
    )
    call = spy.calls[0]
    assert call["y"].shape == (2, 6, 8)
    assert call["mask"].tolist() == [[1] * 6, [1, 1, 0, 0, 0, 0]]


def test_scale_one_skips_unconditional_pass(tiny):
    spy = Spy(tiny)
    GuidedDenoiser(spy, kwargs(2), guidance_scale=1.0, latent_channels=4)(torch.randn(2, 4, 3, 4, 4), torch.tensor([1, 1]), None)
    assert spy.calls[0]["x"].shape[0] == 2


def test_guidance_interval_guides_only_inside_its_noise_band(tiny):
    spy = Spy(tiny)
    kw = kwargs(2)
    x = torch.randn(2, 4, 3, 4, 4)
    y_null, m_null = tiny.null_caption(2)
    den = GuidedDenoiser(spy, kw, guidance_scale=5.0, latent_channels=4, interval=(0.2, 0.6), num_timesteps=1000)
    with torch.no_grad():
        def cond_at(t):
            return tiny(x, t, kw["y"], kw["mask"], height=64, width=64)

        def guided_at(t):
            return combine_cfg(cond_at(t), tiny(x, t, y_null, m_null, height=64, width=64), 5.0, 4)

        for tv, inside in ((900, False), (600, True), (400, True), (200, True), (100, False)):
            spy.calls.clear()
            t = torch.tensor([tv, tv])
            out = den(x, t, None)
            (call,) = spy.calls
            assert call["x"].shape[0] == (4 if inside else 2), tv  # outside the band: one undoubled call
            torch.testing.assert_close(out, guided_at(t) if inside else cond_at(t), rtol=1e-4, atol=1e-5)
        spy.calls.clear()
        t = torch.tensor([500, 800])  # samples at different levels: each gets its own rule
        out = den(x, t, None)
        torch.testing.assert_close(out[:1], guided_at(t)[:1], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out[1:], cond_at(t)[1:], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="low < high"):
        GuidedDenoiser(spy, kw, guidance_scale=5.0, latent_channels=4, interval=(0.6, 0.2))
    with pytest.raises(ValueError, match="guidance_interval"):
        DiffusionConfig(guidance_interval=(0.0, 1.5))


@pytest.mark.parametrize("kind", ["iddpm", "rflow"])
def test_samplers_apply_the_configured_guidance_interval(tiny, kind):
    """A band covering every step samples as plain guidance; an empty share of steps changes the result."""
    shape = (2, 4, 3, 4, 4)

    def run(interval, scale=5.0):
        d = build_diffusion(DiffusionConfig(type=kind, guidance_interval=interval, guidance_scale=scale))
        spy = Spy(tiny)
        out = d.sample(spy, shape, kwargs(2), steps=6, generator=torch.Generator().manual_seed(3))
        return out, [c["x"].shape[0] for c in spy.calls]

    full, sizes_full = run(None)
    everywhere, _ = run((0.0, 1.0))
    torch.testing.assert_close(everywhere, full)
    assert set(sizes_full) == {4}
    high_only, sizes = run((0.5, 1.0))
    assert 4 in sizes and 2 in sizes  # the low-noise steps take the conditional pass alone
    assert not torch.allclose(high_only, full)
    no_guidance, _ = run(None, scale=1.0)
    assert not torch.allclose(high_only, no_guidance)


@pytest.mark.parametrize(("kind", "sampler"), SAMPLERS)
def test_sampling_is_reproducible_and_runs_end_to_end(tiny, kind, sampler):
    d = build_diffusion(DiffusionConfig(type=kind))
    shape = (2, 4, 3, 4, 4)

    def run(seed):
        return d.sample(tiny, shape, kwargs(2), sampler=sampler, steps=6, guidance_scale=4.0, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0), run(1)
    assert a.shape == shape and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize(("kind", "sampler"), SAMPLERS)
def test_conditioning_frames_stay_clean_and_edit_starts_late(tiny, kind, sampler):
    d = build_diffusion(DiffusionConfig(type=kind))
    shape = (1, 4, 4, 4, 4)
    x_cond = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    # frame 0: keep; frame 1: edit in the last half of the steps; frames 2, 3: generate
    x_mask = torch.tensor([[0.0, 0.5, 1.0, 1.0]])
    spy = Spy(tiny)
    steps = 8
    out = d.sample(spy, shape, kwargs(1), sampler=sampler, steps=steps, guidance_scale=3.0,
                   generator=torch.Generator().manual_seed(0), x_cond=x_cond, x_mask=x_mask)
    assert torch.equal(out[:, :, 0], x_cond[:, :, 0])
    assert not torch.allclose(out[:, :, 1], x_cond[:, :, 1])
    assert len(spy.calls) == steps
    for i, call in enumerate(spy.calls):
        x = call["x"][:1]  # conditional half of the guided batch
        assert torch.equal(x[:, :, 0], x_cond[:, :, 0])  # the model always sees the clean frame
        seen_mask = call["x_mask"][:1]
        assert seen_mask[0].tolist() == [False, i >= steps // 2, True, True]
        if i < steps // 2:
            assert torch.equal(x[:, :, 1], x_cond[:, :, 1])
        else:
            assert not torch.equal(x[:, :, 1], x_cond[:, :, 1])


def test_activation_steps():
    m = torch.tensor([[1.0, 0.0, 0.4, 0.25], [1, 1, 1, 1]])
    assert activation_steps(m, 100).tolist() == [[0, 100, 60, 75], [0, 0, 0, 0]]
    assert activation_steps(torch.tensor([[True, False]]), 20).tolist() == [[0, 20]]
    with pytest.raises(ValueError, match="x_mask values"):
        activation_steps(torch.tensor([[1.5]]), 10)


def test_sampler_rejects_mask_without_latents(tiny):
    d = build_diffusion(DiffusionConfig())
    with pytest.raises(ValueError, match="x_cond"):
        d.sample(tiny, (1, 4, 2, 4, 4), kwargs(1), steps=2, x_mask=torch.tensor([[True, False]]))
    with pytest.raises(ValueError, match="rectified flow|IDDPM samples"):
        d.sample(tiny, (1, 4, 2, 4, 4), kwargs(1), steps=2, sampler="euler")


def test_samplers_agree_on_gaussian_data():
    """With the exact optimal predictor for N(0.3, 0.5^2) data, every sampler reproduces it."""
    mean, std = 0.3, 0.5
    shape = (4, 4, 4, 16, 16)
    kw = {"y": torch.zeros(4, 1, 8), "mask": torch.ones(4, 1)}
    iddpm = build_diffusion(DiffusionConfig())
    oracle = GaussianOracle(mean, std, "eps", iddpm.schedule.alphas_cumprod, var_value=0.0)
    stats = {}
    for sampler in ("iddpm", "dpm-solver"):
        x = iddpm.sample(oracle, shape, kw, sampler=sampler, guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
        stats[sampler] = (x.mean().item(), x.std().item())
    rflow = build_diffusion(DiffusionConfig(type="rflow"))
    x = rflow.sample(GaussianOracle(mean, std, "velocity"), shape, kw, guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    stats["euler"] = (x.mean().item(), x.std().item())
    for name, (m, s) in stats.items():
        assert m == pytest.approx(mean, abs=0.02), name
        assert s == pytest.approx(std, abs=0.05), name
    assert abs(stats["iddpm"][1] - stats["dpm-solver"][1]) < 0.05
    # a wrong predictor (data std 1.0) is clearly distinguishable, so the check has teeth
    wrong = GaussianOracle(mean, 1.0, "eps", iddpm.schedule.alphas_cumprod, var_value=0.0)
    x = iddpm.sample(wrong, shape, kw, sampler="dpm-solver", guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert x.std().item() > 0.8


def test_dpm_solver_visits_about_20_steps_and_iddpm_100():
    d = build_diffusion(DiffusionConfig())
    assert len(d.sampling_timesteps(100, "iddpm")) == 100
    ts = d.sampling_timesteps(20, "dpm-solver")
    assert len(ts) == 20 and ts[0] == 999 and ts == sorted(ts, reverse=True)
    cfg = DiffusionConfig(type="rflow")
    assert cfg.resolved_sampler == "euler" and cfg.resolved_steps == 30
    assert DiffusionConfig(sampler="dpm-solver").resolved_steps == 20
