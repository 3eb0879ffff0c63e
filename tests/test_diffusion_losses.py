"""IDDPM loss terms against closed-form values computed independently (float64 numpy/torch)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from soraflow.diffusion import DiffusionConfig, build_diffusion, space_timesteps
from soraflow.diffusion.losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from soraflow.diffusion.schedule import make_ddpm_scheduler

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def diffusion():
    return build_diffusion(DiffusionConfig())


def np_schedule(n: int = 1000):
    betas = np.linspace(1e-4, 0.02, n, dtype=np.float64)
    ac = np.cumprod(1 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    return betas, ac, ac_prev


class FixedOutput(nn.Module):
    """A 'model' returning a fixed tensor (plus a learnable offset so gradients can be checked)."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = nn.Parameter(out.clone())
        self.calls: list[dict] = []

    def forward(self, x, timestep, y, mask=None, x_mask=None, **kw):
        self.calls.append({"x": x.detach().clone(), "t": timestep.clone(), "x_mask": x_mask})
        return self.out


def test_schedule_matches_formulas_and_diffusers(diffusion):
    betas, ac, ac_prev = np_schedule()
    s = diffusion.schedule
    assert s.num_timesteps == 1000
    np.testing.assert_allclose(s.betas.numpy(), betas, rtol=1e-6)
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), ac, rtol=1e-5)
    # diffusers' own table (float32) agrees
    np.testing.assert_allclose(make_ddpm_scheduler(DiffusionConfig()).alphas_cumprod.numpy(), ac, rtol=1e-4)
    post_var = betas * (1 - ac_prev) / (1 - ac)
    np.testing.assert_allclose(s.posterior_variance.numpy(), post_var, rtol=1e-5)
    assert s.posterior_log_variance_clipped[0].item() == pytest.approx(math.log(post_var[1]), rel=1e-6)


def test_posterior_mean_variance_closed_form(diffusion):
    betas, ac, ac_prev = np_schedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 2, 3, 3, generator=g)
    xt = torch.randn(3, 2, 2, 3, 3, generator=g)
    t = torch.tensor([0, 17, 999])
    mean, var, logvar = diffusion.schedule.q_posterior_mean_variance(x0, xt, t)
    for i, ti in enumerate(t.tolist()):
        # q(x_{t-1}|x_t,x_0) = N(c1 x0 + c2 xt, beta_t (1-abar_{t-1})/(1-abar_t))
        c1 = math.sqrt(ac_prev[ti]) * betas[ti] / (1 - ac[ti])
        c2 = math.sqrt(1 - betas[ti]) * (1 - ac_prev[ti]) / (1 - ac[ti])
        want = c1 * x0[i].double() + c2 * xt[i].double()
        torch.testing.assert_close(mean[i].double(), want, rtol=1e-5, atol=1e-6)
        want_var = betas[ti] * (1 - ac_prev[ti]) / (1 - ac[ti])
        assert var[i].flatten()[0].item() == pytest.approx(want_var, rel=1e-5, abs=1e-12)
        want_logvar = math.log(betas[1] * (1 - ac_prev[1]) / (1 - ac[1])) if ti == 0 else math.log(want_var)
        assert logvar[i].flatten()[0].item() == pytest.approx(want_logvar, rel=1e-5)


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    m1, m2 = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    lv1, lv2 = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    want = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (0.5 * lv1).exp()), torch.distributions.Normal(m2, (0.5 * lv2).exp())
    )
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), want)
    assert normal_kl(m1, lv1, m1, lv1).abs().max().item() < 1e-12


def test_discretized_gaussian_nll_direct():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.3, 1.0], dtype=torch.float64)
    mean = torch.tensor([-0.9, -0.4, 0.1, 0.3, 0.8], dtype=torch.float64)
    log_scale = torch.log(torch.tensor([0.1, 0.2, 0.05, 0.3, 0.2], dtype=torch.float64))
    got = discretized_gaussian_log_likelihood(x, means=mean, log_scales=log_scale)
    normal = torch.distributions.Normal(mean, log_scale.exp())
    exact = torch.empty_like(x)
    for i in range(5):  # bins of width 2/255 centred on x; the edge bins run to +-infinity
        lo = -math.inf if x[i] < -0.999 else x[i] - 1 / 255
        hi = math.inf if x[i] > 0.999 else x[i] + 1 / 255
        cdf = lambda v: 0.0 if v == -math.inf else (1.0 if v == math.inf else normal.cdf(torch.tensor(float(v), dtype=torch.float64))[i].item())  # noqa: E731
        exact[i] = math.log(cdf(hi) - cdf(lo))
    # the tanh CDF approximation is good to ~1e-3 relative on these probabilities
    torch.testing.assert_close(got, exact, rtol=2e-2, atol=2e-3)


def test_mean_flat_with_frame_mask():
    t = torch.arange(2 * 1 * 3 * 1 * 2, dtype=torch.float32).reshape(2, 1, 3, 1, 2)
    m = torch.tensor([[True, False, True], [False, False, False]])
    got = mean_flat(t, m)
    assert got[0].item() == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert got[1].item() == 0.0  # an all-conditioning sample contributes 0, not NaN
    torch.testing.assert_close(mean_flat(t), t.mean(dim=(1, 2, 3, 4)))


def test_space_timesteps_matches_improved_diffusion():
    steps = space_timesteps(1000, "100")
    assert len(steps) == 100 and steps[0] == 0 and steps[-1] == 999
    assert steps[:4] == [0, 10, 20, 30] and steps[50] == 505
    assert space_timesteps(1000, "10") == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert space_timesteps(100, "ddim10") == list(range(0, 100, 10))
    assert space_timesteps(1000, "1,2") == [0, 500, 999]


def test_respaced_schedule_matches_diffusers_step_variance(diffusion):
    """diffusers' learned_range variance on the respaced steps equals improved-diffusion's."""
    steps = space_timesteps(1000, "100")
    resp = diffusion.schedule.respaced(steps)
    sched = make_ddpm_scheduler(DiffusionConfig())
    sched.set_timesteps(timesteps=sorted(steps, reverse=True))
    v = torch.tensor([[0.3]])
    for k in (1, 37, 99):  # respaced index k <-> original step steps[k]
        want = resp.learned_range_log_variance(v, torch.tensor([k])).item()
        got = sched._get_variance(steps[k], predicted_variance=v).item()
        assert got == pytest.approx(want, rel=1e-4)


def test_q_sample_keeps_conditioning_frames_at_t0(diffusion):
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(2, 3, 4, 2, 2, generator=g), torch.randn(2, 3, 4, 2, 2, generator=g)
    t = torch.tensor([500, 900])
    x_mask = torch.tensor([[False, True, True, False], [True, True, True, True]])
    xt = diffusion.q_sample(x0, t, noise, x_mask)
    _, ac, _ = np_schedule()
    a0 = math.sqrt(ac[0])
    # conditioning frames: noised at t = 0 (std 0.01), so within 0.01*|noise| of x0
    torch.testing.assert_close(xt[0, :, 0], a0 * x0[0, :, 0] + math.sqrt(1 - ac[0]) * noise[0, :, 0])
    assert (xt[0, :, [0, 3]] - x0[0, :, [0, 3]]).abs().max() < 0.05
    # generated frames: noised at t
    torch.testing.assert_close(xt[0, :, 1], math.sqrt(ac[500]) * x0[0, :, 1] + math.sqrt(1 - ac[500]) * noise[0, :, 1])
    torch.testing.assert_close(xt[1], math.sqrt(ac[900]) * x0[1] + math.sqrt(1 - ac[900]) * noise[1])


def _kw(batch: int) -> dict:
    return {"y": torch.zeros(batch, 2, 8), "mask": torch.ones(batch, 2), "height": 64, "width": 64}


def test_training_loss_terms_closed_form(diffusion):
    """mse, KL (t > 0) and decoder NLL (t = 0) recomputed by hand in float64."""
    betas, ac, ac_prev = np_schedule()
    g = torch.Generator().manual_seed(3)
    B, C = 2, 2
    x0 = (torch.rand(B, C, 2, 2, 2, generator=g) * 1.6 - 0.8)
    noise = torch.randn(x0.shape, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    v = torch.rand(x0.shape, generator=g) * 2 - 1
    model = FixedOutput(torch.cat([eps, v], 1))
    t = torch.tensor([0, 400])
    out = diffusion.training_losses(model, x0, _kw(B), noise=noise, t=t)
    assert set(out) == {"loss", "mse", "vb", "t"}
    torch.testing.assert_close(out["mse"], ((noise - eps) ** 2).mean(dim=(1, 2, 3, 4)))
    for i, ti in enumerate(t.tolist()):
        x0d, nd, ed, vd = (z[i].double() for z in (x0, noise, eps, v))
        xt = math.sqrt(ac[ti]) * x0d + math.sqrt(1 - ac[ti]) * nd
        pv = betas * (1 - ac_prev) / (1 - ac)
        min_log = math.log(pv[1] if ti == 0 else pv[ti])
        max_log = math.log(betas[ti])
        logvar = (vd + 1) / 2 * max_log + (1 - vd) / 2 * min_log
        x0_pred = (xt - math.sqrt(1 - ac[ti]) * ed) / math.sqrt(ac[ti])
        c1 = math.sqrt(ac_prev[ti]) * betas[ti] / (1 - ac[ti])
        c2 = math.sqrt(1 - betas[ti]) * (1 - ac_prev[ti]) / (1 - ac[ti])
        model_mean = c1 * x0_pred + c2 * xt
        if ti == 0:
            nll = -discretized_gaussian_log_likelihood(x0d, means=model_mean, log_scales=0.5 * logvar)
            want = nll.mean().item() / math.log(2)
        else:
            true_mean = c1 * x0d + c2 * xt
            true_logvar = math.log(pv[ti])
            kl = 0.5 * (-1 + logvar - true_logvar + math.exp(true_logvar) / logvar.exp() + (true_mean - model_mean) ** 2 / logvar.exp())
            want = kl.mean().item() / math.log(2)
        # RESCALED_MSE: vb * num_timesteps / 1000 (= 1 here)
        assert out["vb"][i].item() == pytest.approx(want, rel=1e-3, abs=1e-6)
    torch.testing.assert_close(out["loss"], out["mse"] + out["vb"])


def test_vb_is_rescaled_by_num_timesteps():
    d = build_diffusion(DiffusionConfig(num_timesteps=2000, beta_start=5e-5, beta_end=0.01))
    g = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(1, 2, 1, 2, 2, generator=g), torch.randn(1, 2, 1, 2, 2, generator=g)
    model = FixedOutput(torch.randn(1, 4, 1, 2, 2, generator=g))
    out = d.training_losses(model, x0, _kw(1), noise=noise, t=torch.tensor([700]))
    xt = d.schedule.q_sample(x0, torch.tensor([700]), noise)
    raw = d.vb_terms(x0, xt, torch.tensor([700]), model.out[:, :2].detach(), model.out[:, 2:].detach())["vb"]
    assert out["vb"].item() == pytest.approx(2.0 * raw.item(), rel=1e-5)


def test_vb_trains_only_the_variance(diffusion):
    """The bound sees the predicted mean detached: its gradient on the eps channels is zero."""
    g = torch.Generator().manual_seed(5)
    x0, noise = torch.randn(2, 2, 2, 2, 2, generator=g), torch.randn(2, 2, 2, 2, 2, generator=g)
    model = FixedOutput(torch.randn(2, 4, 2, 2, 2, generator=g))
    out = diffusion.training_losses(model, x0, _kw(2), noise=noise, t=torch.tensor([10, 300]))
    out["vb"].sum().backward()
    assert model.out.grad[:, :2].abs().max().item() == 0.0
    assert model.out.grad[:, 2:].abs().max().item() > 0.0


def test_masked_frames_excluded_from_loss(diffusion):
    g = torch.Generator().manual_seed(6)
    x0, noise = torch.randn(2, 2, 4, 2, 2, generator=g), torch.randn(2, 2, 4, 2, 2, generator=g)
    base = torch.randn(2, 4, 4, 2, 2, generator=g)
    x_mask = torch.tensor([[False, True, True, False], [True, True, False, True]])
    t = torch.tensor([250, 600])
    a = diffusion.training_losses(FixedOutput(base), x0, _kw(2), x_mask=x_mask, noise=noise, t=t)
    changed = base + 5.0 * (~x_mask)[:, None, :, None, None]  # garbage on conditioning frames only
    assert not torch.equal(changed, base)
    m = FixedOutput(changed)
    b = diffusion.training_losses(m, x0, _kw(2), x_mask=x_mask, noise=noise, t=t)
    for key in ("loss", "mse", "vb"):
        torch.testing.assert_close(a[key], b[key])
    # mse is the mean over generated frames only
    sq = (noise - base[:, :2]) ** 2
    want0 = sq[0, :, 1:3].mean()
    assert a["mse"][0].item() == pytest.approx(want0.item(), rel=1e-5)
    # and the model was told which frames are conditioning
    assert torch.equal(m.calls[-1]["x_mask"], x_mask)


def test_learn_sigma_off_has_no_vb():
    d = build_diffusion(DiffusionConfig(learn_sigma=False))
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(2, 2, 1, 2, 2, generator=g)
    out = d.training_losses(FixedOutput(torch.zeros(2, 2, 1, 2, 2)), x0, _kw(2), generator=g)
    assert "vb" not in out
    torch.testing.assert_close(out["loss"], out["mse"])


def test_temporal_difference_mse_closed_form():
    """Mean square of frame-to-frame changes, only over pairs of counted frames."""
    from soraflow.diffusion.losses import temporal_difference_mse

    err = torch.zeros(2, 1, 4, 1, 1)
    err[0, 0, :, 0, 0] = torch.tensor([0.0, 1.0, 1.0, 3.0])  # diffs 1, 0, 2 -> mean sq 5/3
    err[1, 0, :, 0, 0] = 2.0  # constant in time: no temporal error at all
    torch.testing.assert_close(temporal_difference_mse(err), torch.tensor([5 / 3, 0.0]))
    mask = torch.tensor([[True, True, False, True], [True, True, True, True]])
    torch.testing.assert_close(temporal_difference_mse(err, mask), torch.tensor([1.0, 0.0]))  # only pair (0, 1)
    assert temporal_difference_mse(err[:, :, :1]).tolist() == [0.0, 0.0]


def test_rflow_temporal_loss_term_weights_only_changing_errors():
    """loss = mse + w * temporal; a model whose error is the same in every frame pays no extra."""
    cfg = DiffusionConfig(type="rflow", learn_sigma=False, rflow={"temporal_loss_weight": 2.0})
    rf = build_diffusion(cfg)
    x0, noise = torch.randn(3, 2, 5, 4, 4), torch.randn(3, 2, 5, 4, 4)
    t = torch.full((3,), 400.0)
    offset = torch.randn(3, 2, 1, 4, 4)  # a per-pixel error constant over frames

    def static_error_model(x_t, tt, **kw):
        return (x0 - noise) + offset

    out = rf.training_losses(static_error_model, x0, {}, noise=noise, t=t)
    torch.testing.assert_close(out["temporal"], torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["loss"], out["mse"])
    torch.testing.assert_close(out["mse"], offset.pow(2).mean(dim=(1, 2, 3, 4)), atol=1e-5, rtol=1e-5)

    flicker = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0]).view(1, 1, 5, 1, 1)

    def flicker_model(x_t, tt, **kw):
        return (x0 - noise) + flicker

    out = rf.training_losses(flicker_model, x0, {}, noise=noise, t=t)
    torch.testing.assert_close(out["mse"], torch.ones(3))
    torch.testing.assert_close(out["temporal"], torch.full((3,), 4.0))
    torch.testing.assert_close(out["loss"], torch.full((3,), 1.0 + 2.0 * 4.0))
    # the held-out loss stays the plain MSE
    torch.testing.assert_close(rf.loss_at_timesteps(flicker_model, x0, {}, timesteps=[400.0], noise=noise)[0], torch.ones(3))
