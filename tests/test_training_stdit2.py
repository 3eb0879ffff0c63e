"""The engine with the real pieces: a tiny STDiT2, IDDPM's hybrid loss with Open-Sora's frame
masks, caption dropout through STDiT2's null caption, and the bucket sampler (which resumes
itself) over synthetic latents. Loss falls, a resumed run matches bitwise, and the final
folder loads with ``soraflow.models.load_model``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

models = pytest.importorskip("soraflow.models", reason="soraflow.models (STDiT2) not importable")
diffusion = pytest.importorskip("soraflow.diffusion", reason="soraflow.diffusion not importable")
masks = pytest.importorskip("soraflow.masks", reason="soraflow.masks not importable")
buckets = pytest.importorskip("soraflow.buckets", reason="soraflow.buckets not importable")

from soraflow.buckets import BucketSampler  # noqa: E402
from soraflow.buckets.config import BucketsConfig  # noqa: E402
from soraflow.diffusion import build_diffusion  # noqa: E402
from soraflow.diffusion.config import DiffusionConfig  # noqa: E402
from soraflow.masks import MaskGenerator  # noqa: E402
from soraflow.training.checkpoint import load_weights  # noqa: E402
from soraflow.training.components import Components, drop_captions  # noqa: E402
from soraflow.training.config import TrainConfig  # noqa: E402
from soraflow.training.loop import compile_model, train  # noqa: E402
from soraflow.training.rng import capture_rng, restore_rng, seed_everything  # noqa: E402

CAPTION_CHANNELS, TOKENS = 16, 8


@pytest.fixture(autouse=True)
def _keep_global_torch_state():
    det, rng, threads = torch.are_deterministic_algorithms_enabled(), capture_rng(), torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)
    restore_rng(rng)


class Latents(torch.utils.data.Dataset):
    """Latents [4, T, H/8, W/8] for a bucket request; content and caption set by a class."""

    def __init__(self, num_clips: int):
        g = torch.Generator().manual_seed(0)
        self.means = torch.randn(4, 4, generator=g)
        self.captions = torch.randn(4, TOKENS, CAPTION_CHANNELS, generator=g)
        self.num_clips = num_clips

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, req) -> dict:
        cls = req.index % 4
        g = torch.Generator().manual_seed(req.index)
        shape = (4, req.num_frames, req.height // 8, req.width // 8)
        x = self.means[cls].view(4, 1, 1, 1) + 0.1 * torch.randn(shape, generator=g)
        mask = torch.ones(TOKENS, dtype=torch.long)
        mask[TOKENS - 1 - req.index % 3 :] = 0
        bucket = f"{req.num_frames}x{req.height}x{req.width}"
        return {"x": x, "y": self.captions[cls][None], "mask": mask, "index": req.index, "bucket": bucket,
                "height": req.height, "width": req.width}


def collate(samples: list[dict]) -> dict:
    out = {k: torch.stack([s[k] for s in samples]) for k in ("x", "y", "mask")}
    out["index"] = torch.tensor([s["index"] for s in samples])
    for k in ("bucket", "height", "width"):
        out[k] = samples[0][k]
    return out


def build(cfg: TrainConfig, one_shape: bool = False) -> Components:
    """Four bucket shapes (stills and 4-frame clips, 1:1 and 16:9), or with ``one_shape`` only
    4-frame 1:1 clips (a compiled model then compiles one graph instead of one per shape)."""
    seed_everything(cfg.seed)
    config = models.preset_config("STDiT2-T/2", caption_channels=CAPTION_CHANNELS, caption_max_length=TOKENS)
    model = models.build_model(config, seed=cfg.seed)
    n = 48
    clips = pd.DataFrame({
        "id": [f"clip{i}" for i in range(n)],
        "num_frames": [20 if one_shape or i % 3 else 1 for i in range(n)],
        "height": [32] * n,
        "width": [32 if one_shape or i % 2 else 48 for i in range(n)],
    })
    bucket_config = BucketsConfig(
        bucket_config={"32px": {1: [1.0, 4], 4: [1.0, 2]}},
        extra_resolutions={"32px": {"pixels": 1024, "aspect_ratios": ["1:1", "16:9"], "snap": 16}},
        frame_interval=2,
        seed=cfg.seed,
    )
    sampler = BucketSampler(clips, bucket_config, num_replicas=1, rank=0, seed=cfg.seed)
    iddpm = build_diffusion(DiffusionConfig())
    mask_gen = MaskGenerator()

    def loss_fn(model, batch):
        x = batch["x"]
        x_mask, _ = mask_gen.sample(x.shape[0], x.shape[2], device=x.device)
        kwargs = {"y": batch["y"], "mask": batch["mask"], "height": batch["height"] * 1.0, "width": batch["width"] * 1.0}
        out = iddpm.training_losses(model, x, kwargs, x_mask=x_mask)
        out["bucket"] = batch["bucket"]
        return out

    return Components(
        model=model, dataset=Latents(n), sampler=sampler, loss_fn=loss_fn, collate_fn=collate,
        caption_dropout=drop_captions, count_tokens=lambda b: b["x"].shape[0] * b["x"].shape[2] * (b["x"].shape[3] // 2) * (b["x"].shape[4] // 2),
        num_timesteps=1000, save_model=models.save_model,
    )


def run(out: Path, one_shape: bool = False, **kw):
    cfg = TrainConfig(**{"steps": 10, "ckpt_every": 5, "lr": 3e-3, "output": str(out), "seed": 1, "keep_last_k": 0, **kw})
    metrics = {}
    result = train(cfg, build(cfg, one_shape), on_metrics=lambda s, m: metrics.__setitem__(s, m))
    return result, metrics


def assert_folder_runs(final_dir: Path) -> None:
    """The final folder loads with ``load_model`` (config.json + model.safetensors via
    save_model) and the model gives finite outputs."""
    model = models.load_model(final_dir)
    x = torch.randn(1, 4, 1, 4, 4)
    y, mask = model.null_caption(1)
    with torch.no_grad():
        assert model(x, torch.tensor([10]), y, mask, height=32.0, width=32.0).isfinite().all()


def test_stdit2_trains_resumes_exactly_and_saves_a_model_folder(tmp_path):
    full, metrics = run(tmp_path / "full", steps=24, ckpt_every=12)
    first = sum(metrics[s]["loss"] for s in (1, 2, 3)) / 3
    last = sum(metrics[s]["loss"] for s in (22, 23, 24)) / 3
    assert last < first, (first, last)
    assert any(k.startswith("loss_by_bucket/") for m in metrics.values() for k in m)

    run(tmp_path / "resumed", steps=12, ckpt_every=12)
    resumed, _ = run(tmp_path / "resumed", steps=24, ckpt_every=12)
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_weights(full.final_dir, name), load_weights(resumed.final_dir, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name

    assert_folder_runs(full.final_dir)
    ema = models.load_model(full.final_dir)
    ema.load_state_dict(load_weights(full.final_dir, "ema.safetensors"), strict=True)


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    """``train.compile``: the blocks run through torch.compile (inductor), the losses follow the
    eager run's, and the saved folder holds the same parameter names and loads as a model.

    (Weights are not compared value by value: Adam's first steps are lr * sign(grad), so
    rounding-level differences on near-zero gradients move weights by a whole step.) One bucket
    shape in fp32, so inductor compiles one graph: compiling is most of this test's time on a
    CPU; bf16 autocast through compiled blocks is checked in test_models_behaviour.py."""
    from torch._dynamo.utils import counters

    kw = {"steps": 4, "ckpt_every": 4, "mixed_precision": "fp32", "one_shape": True}
    eager, eager_metrics = run(tmp_path / "eager", **kw)
    torch._dynamo.reset()
    counters.clear()
    compiled, compiled_metrics = run(tmp_path / "compiled", compile=True, **kw)
    assert counters["stats"]["unique_graphs"] > 0  # the blocks did go through dynamo
    assert compiled_metrics[1]["loss"] == pytest.approx(eager_metrics[1]["loss"], rel=1e-4)
    for s in range(2, 5):
        assert compiled_metrics[s]["loss"] == pytest.approx(eager_metrics[s]["loss"], rel=5e-2), s
    for name in ("model.safetensors", "ema.safetensors"):
        assert load_weights(eager.final_dir, name).keys() == load_weights(compiled.final_dir, name).keys(), name
    assert_folder_runs(compiled.final_dir)


def test_compile_without_a_cpp_compiler_trains_eager(monkeypatch, caplog):
    """`train.compile` on a CPU machine without a C++ toolchain (inductor writes C++ kernels):
    the model stays eager and a warning says why, instead of the first step failing."""
    import torch._inductor.cpp_builder as cpp_builder
    from models_helpers import tiny_model

    def no_compiler() -> str:
        raise cpp_builder.exc.InvalidCxxCompiler()

    model = tiny_model()
    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    with caplog.at_level("WARNING", logger="soraflow.training.loop"):
        assert compile_model(model, device=torch.device("cpu")) is False
    assert "no working C++ compiler" in caplog.text
    assert all(block._compiled_call_impl is None for block in model.blocks)
    assert not model.fp32_residual
    monkeypatch.undo()
    assert compile_model(model, device=torch.device("cpu")) is True  # lazy: nothing compiles until a call
    assert all(block._compiled_call_impl is not None for block in model.blocks)


@pytest.mark.parametrize("dynamic", [None, True, False])
def test_compile_dynamic_reaches_every_block(monkeypatch, dynamic):
    """`train.compile_dynamic` is handed to torch.compile for every block; null leaves
    PyTorch's default (automatic dynamic shapes after a recompile) untouched."""
    from models_helpers import tiny_model

    seen: list[dict] = []
    real_compile = torch.compile

    def recording_compile(fn, **kwargs):
        seen.append(kwargs)
        return real_compile(fn, **kwargs)

    monkeypatch.setattr(torch, "compile", recording_compile)
    model = tiny_model()
    cfg = TrainConfig.model_validate({"compile": True, "compile_dynamic": dynamic})
    assert compile_model(model, device=torch.device("cpu"), dynamic=cfg.compile_dynamic) is True
    assert len(seen) == len(model.blocks)
    for kwargs in seen:
        assert kwargs.get("dynamic", "unset") == ("unset" if dynamic is None else dynamic)
