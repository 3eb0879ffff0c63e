"""Integration: the diffusion drives the real STDiT2 (tiny preset) through the shared signature."""

from __future__ import annotations

import pytest
import torch

from soraflow.diffusion import DiffusionConfig, build_diffusion
from soraflow.masks import MaskGenerator, apply_mask_strategy

models = pytest.importorskip("soraflow.models")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def stdit2():
    torch.manual_seed(0)
    return models.build_model(models.preset_config("STDiT2-T/2", caption_channels=8, caption_max_length=4))


def _kwargs(batch: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "y": torch.randn(batch, 3, 8, generator=g),
        "mask": torch.ones(batch, 3, dtype=torch.bool),
        "height": torch.full((batch,), 64),
        "width": torch.full((batch,), 64),
        "num_frames": torch.full((batch,), 3),
        "fps": torch.full((batch,), 8),
    }


@pytest.mark.parametrize("kind", ["iddpm", "rflow"])
def test_training_step_with_masks_on_stdit2(stdit2, kind):
    d = build_diffusion(DiffusionConfig(type=kind))
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, 3, 8, 8, generator=g)
    x_mask, _ = MaskGenerator({"image_head": 1.0}).sample(2, 3, g)
    out = d.training_losses(stdit2, x0, _kwargs(2), x_mask=x_mask, generator=g)
    assert out["loss"].shape == (2,) and torch.isfinite(out["loss"]).all()
    assert ("vb" in out) == (kind == "iddpm")
    out["loss"].mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in stdit2.parameters())
    stdit2.zero_grad(set_to_none=True)


@pytest.mark.parametrize(("kind", "sampler"), [("iddpm", "iddpm"), ("iddpm", "dpm-solver"), ("rflow", "euler")])
def test_guided_conditioned_sampling_on_stdit2(stdit2, kind, sampler):
    d = build_diffusion(DiffusionConfig(type=kind))
    shape = (1, 4, 3, 8, 8)
    ref = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    x_cond, x_mask = apply_mask_strategy(torch.zeros(shape), [[ref]], ["0"])  # image-to-video
    run = lambda: d.sample(stdit2.eval(), shape, _kwargs(1), sampler=sampler, steps=3, guidance_scale=4.0,  # noqa: E731
                           generator=torch.Generator().manual_seed(0), x_cond=x_cond, x_mask=x_mask)
    a, b = run(), run()
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert torch.equal(a[:, :, 0], ref[None, :, 0])  # the reference frame is kept exactly
