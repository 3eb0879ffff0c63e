"""benchmarks/cuda_check.py runs only where a GPU is lent: its checks must keep working (and keep
failing on wrong results) on the CPU, so that a lease is not spent on a broken script."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cuda_check.py"


@pytest.fixture(scope="module")
def cuda_check():
    spec = importlib.util.spec_from_file_location("cuda_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.mark.parametrize(("kind", "sampler"), [("iddpm", "dpm-solver"), ("rflow", "euler")])
def test_sampling_check_passes_on_the_cpu(cuda_check, kind, sampler):
    label, ok, detail = cuda_check.check_sampling(torch.device("cpu"), kind, sampler, 4)
    assert ok, detail
    assert "i2v frame kept True" in detail


def test_overfit_check_passes_and_fails_honestly(cuda_check, monkeypatch):
    cpu = torch.device("cpu")
    label, ok, detail = cuda_check.check_overfit(cpu, "rflow", steps=150)
    assert ok, detail
    # an optimiser that does not move the weights: the same check must fail
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, **kw: torch.optim.SGD(params, lr=0.0))
    label, ok, detail = cuda_check.check_overfit(cpu, "rflow", steps=20)
    assert not ok, detail


def test_forward_agreement_is_measured_not_assumed(cuda_check):
    a = torch.randn(64, generator=torch.Generator().manual_seed(0))
    assert cuda_check.rel_err(a, a) == 0.0
    assert cuda_check.rel_err(a * 1.01, a) == pytest.approx(0.01, rel=1e-6)
