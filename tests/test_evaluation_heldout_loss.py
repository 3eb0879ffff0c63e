"""Held-out diffusion loss on a tiny STDiT2 and a cache-like set of latents."""

from __future__ import annotations

import math

import pytest
import torch

from evaluation_helpers import tiny_stdit, write_cache, one_torch_thread  # noqa: F401 (autouse fixture)
from soraflow.diffusion import DiffusionConfig, build_diffusion
from soraflow.evaluation.heldout_loss import bucket_key, heldout_loss, timestep_key
from soraflow.features.cache import FeatureCache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    write_cache(root, {"32px": (5, 2, 4, 4), "64px": (3, 1, 8, 4)})
    return FeatureCache(root, split="heldout")


@pytest.mark.parametrize("kind", ["iddpm", "rflow"])
def test_heldout_loss_per_timestep_and_bucket(cache, kind):
    model = tiny_stdit()
    diffusion = build_diffusion(DiffusionConfig(type=kind, learn_sigma=kind == "iddpm"))
    result = heldout_loss(model, diffusion, cache, num_timesteps=10, batch_size=2, seed=0, progress=False)
    m = result.metrics()
    ts = diffusion.eval_timesteps(10)
    assert len(ts) == 10
    assert {timestep_key(t) for t in ts} <= set(m)
    assert bucket_key("32px", 2, 16, 16) in m and bucket_key("64px", 1, 32, 16) in m
    assert m["heldout_loss_rows"] == 8
    assert math.isfinite(m["heldout_loss"]) and m["heldout_loss"] > 0
    # the overall loss is the row-weighted mean of the bucket losses and of the timestep losses
    by_bucket = result.by_bucket()
    weighted = (by_bucket["loss"] * by_bucket["rows"]).sum() / by_bucket["rows"].sum()
    assert m["heldout_loss"] == pytest.approx(weighted, rel=1e-6)
    assert m["heldout_loss"] == pytest.approx(result.by_timestep()["loss"].mean(), rel=1e-6)
    # deterministic: the same seed gives the same number, another seed another one
    again = heldout_loss(model, diffusion, cache, num_timesteps=10, batch_size=2, seed=0, progress=False)
    other = heldout_loss(model, diffusion, cache, num_timesteps=10, batch_size=2, seed=1, progress=False)
    assert again.loss == result.loss
    assert other.loss != pytest.approx(result.loss, rel=1e-9)


def test_heldout_loss_matches_the_diffusion_loss_directly(cache):
    """One bucket, one batch: the wrapper returns exactly loss_at_timesteps' mean."""
    model = tiny_stdit()
    diffusion = build_diffusion(DiffusionConfig())
    result = heldout_loss(model, diffusion, cache, num_timesteps=4, batch_size=64, seed=3, progress=False)
    rows = [i for i, r in enumerate(cache.index["bucket_resolution"]) if r == "32px"]
    batch = cache.batch(rows)
    gen = torch.Generator().manual_seed(3 * 1_000_003 + 0)  # the first batch is the first bucket (sorted)
    noise = torch.randn(batch["latents"].shape, generator=gen)
    kwargs = {k: batch[k] for k in ("y", "mask", "height", "width", "num_frames", "fps")}
    direct = diffusion.loss_at_timesteps(model, batch["latents"], kwargs, timesteps=diffusion.eval_timesteps(4), noise=noise)
    got = result.table[result.table["bucket"] == bucket_key("32px", 2, 16, 16)]["loss"].to_numpy()
    assert got == pytest.approx(direct.mean(dim=1).numpy(), rel=1e-5)


def test_empty_cache_is_an_error(cache):
    class Empty:
        index = cache.index.iloc[:0]

    with pytest.raises(ValueError, match="no rows"):
        heldout_loss(tiny_stdit(), build_diffusion(DiffusionConfig()), Empty(), progress=False)
