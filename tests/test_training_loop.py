"""The training loop in one process on the toy model: learning, metrics, exact resume,
NaN stop, warmup, caption dropout, grad accumulation and checkpointing, multi-stage init."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from soraflow.training.checkpoint import list_checkpoints, load_train_state, load_weights
from soraflow.training.components import drop_captions
from soraflow.training.config import TrainConfig
from soraflow.training.distributed import DistContext
from soraflow.training.loop import NonFiniteLossError, train, use_bf16
from soraflow.training.rng import capture_rng, restore_rng, seed_everything
from soraflow.training.toy import ToyVideoModel, build_toy_components

SINGLE = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)


@pytest.fixture(autouse=True)
def _keep_global_torch_state():
    """train() seeds the global RNGs and may switch deterministic kernels: undo after each test.

    One intra-op thread: the toy's ops are tiny, and OpenMP threads on a busy 2-core machine
    cost more than they bring."""
    det = torch.are_deterministic_algorithms_enabled()
    rng = capture_rng()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)
    restore_rng(rng)


def make_cfg(out: Path, **kw) -> TrainConfig:
    base = dict(steps=8, ckpt_every=4, lr=1e-2, log_every=1, output=str(out), keep_last_k=0, seed=0)
    return TrainConfig(**{**base, **kw})


def build(cfg: TrainConfig, **opts):
    seed_everything(cfg.seed)  # what the worker does: the same initial weights on every rank
    opts = {"num_samples": 32, "batch_size": 4, **opts}
    return build_toy_components(SimpleNamespace(train=cfg), SINGLE, **opts)


def run(cfg: TrainConfig, comp=None, **opts):
    comp = comp or build(cfg, **opts)
    metrics: dict[int, dict[str, float]] = {}
    result = train(cfg, comp, on_metrics=lambda step, m: metrics.__setitem__(step, m))
    return result, metrics, comp


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_loss_falls_metrics_and_final_folder(tmp_path):
    cfg = make_cfg(tmp_path / "out", steps=30, ckpt_every=10, log_every=5)
    result, metrics, comp = run(cfg)
    assert result.step == 30 and sorted(metrics) == [5, 10, 15, 20, 25, 30]
    first, last = metrics[5]["loss"], metrics[30]["loss"]
    assert last < 0.6 * first, (first, last)
    m = metrics[30]
    for key in ("loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "peak_memory_mb", "data_wait_frac"):
        assert key in m and m[key] == m[key] and m[key] >= 0, key
    assert {"loss_by_bucket/2x4x4", "loss_by_bucket/1x4x8"} <= set(m)
    quarters = [k for k in m if k.startswith("loss_by_t/q")]
    assert len(quarters) >= 3
    # Noise prediction is hardest at small t (little noise): q1 has the highest loss.
    assert m.get("loss_by_t/q1", 0) > m.get("loss_by_t/q4", float("inf"))
    assert m["tokens_per_s"] == pytest.approx(m["samples_per_s"] * 32, rel=0.35)

    final = result.final_dir
    assert final == tmp_path / "out" / "final"
    assert json.loads((final / "config.json").read_text())["class"] == "ToyVideoModel"
    saved = load_weights(final)
    for name, p in comp.model.state_dict().items():
        assert torch.equal(saved[name], p), name
    ema = load_weights(final, "ema.safetensors")
    assert set(ema) == set(saved)
    assert not torch.equal(ema["out.weight"], saved["out.weight"])  # 0.9999: still near the start
    assert [p.name for p in list_checkpoints(cfg.output)] == ["step-00000010", "step-00000020", "step-00000030"]


@pytest.mark.parametrize(
    ("resumable_sampler", "num_workers"),
    [(False, 0), (True, 0), (False, 2)],
    ids=["engine-skips", "sampler-resumes", "engine-skips-2-workers"],
)
def test_resume_continues_bitwise(tmp_path, resumable_sampler, num_workers):
    # 32 samples / 4 = 8 batches per epoch: stopping at step 6 resumes mid-epoch 0... and the
    # run crosses into epoch 1 after the resume.
    opts = {"resumable_sampler": resumable_sampler}
    kw = {"caption_dropout": 0.5, "num_workers": num_workers, "ckpt_every": 6}
    full, _, _ = run(make_cfg(tmp_path / "a", steps=12, **kw), **opts)
    run(make_cfg(tmp_path / "b", steps=6, **kw), **opts)
    resumed, _, _ = run(make_cfg(tmp_path / "b", steps=12, **kw), **opts)
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_weights(full.final_dir, name), load_weights(resumed.final_dir, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert read_jsonl(tmp_path / "a" / "batches-rank0.jsonl") == read_jsonl(tmp_path / "b" / "batches-rank0.jsonl")
    assert read_jsonl(tmp_path / "a" / "digests-rank0.jsonl") == read_jsonl(tmp_path / "b" / "digests-rank0.jsonl")
    state = load_train_state(Path(tmp_path / "b" / "checkpoints" / "step-00000006"))
    assert state["ranks"][0]["position"] == 6
    if resumable_sampler:
        assert state["ranks"][0]["sampler"]["position"] == 6
    # resume: none starts over.
    fresh, _, _ = run(make_cfg(tmp_path / "b", steps=2, resume="none", num_workers=num_workers), **opts)
    assert fresh.step == 2


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = make_cfg(tmp_path / "out", steps=10, ckpt_every=2)
    comp = build(cfg)
    inner, calls = comp.loss_fn, {"n": 0}

    def poisoned(model, batch):
        out = inner(model, batch)
        calls["n"] += 1
        if calls["n"] == 5:
            out["loss"] = out["loss"] * float("nan")
        return out

    comp.loss_fn = poisoned
    with pytest.raises(NonFiniteLossError) as err:
        run(cfg, comp)
    msg = str(err.value)
    assert "step 5" in msg and "nan" in msg and "step-00000004" in msg
    assert [p.name for p in list_checkpoints(cfg.output)] == ["step-00000002", "step-00000004"]
    for t in load_weights(Path(cfg.output) / "checkpoints" / "step-00000004").values():
        assert torch.isfinite(t).all()
    assert not (Path(cfg.output) / "final").exists()
    # The weights in memory were not touched by the NaN step either.
    assert all(torch.isfinite(p).all() for p in comp.model.parameters())


def test_warmup_schedule(tmp_path):
    _, metrics, _ = run(make_cfg(tmp_path / "out", steps=6, warmup_steps=4, lr=0.01, ckpt_every=100))
    lrs = [metrics[s]["lr"] for s in range(1, 7)]
    assert lrs == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])


def test_cosine_schedule_after_warmup(tmp_path):
    """Warmup, then a half cosine that reaches min_lr_ratio * lr exactly at the last step."""
    cfg = make_cfg(tmp_path / "out", steps=6, warmup_steps=2, lr=0.01, ckpt_every=100,
                   lr_schedule="cosine", min_lr_ratio=0.1)
    _, metrics, _ = run(cfg)
    lrs = [metrics[s]["lr"] for s in range(1, 7)]
    cos = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)) for p in (0.25, 0.5, 0.75, 1.0)]
    assert lrs == pytest.approx([0.005, 0.01, *(0.01 * c for c in cos)])
    assert lrs[-1] == pytest.approx(0.001)


def test_cosine_schedule_resumes_exactly(tmp_path):
    """A cosine run resumed from its step-6 checkpoint ends bitwise equal to the uninterrupted run."""
    kw = {"steps": 12, "ckpt_every": 6, "warmup_steps": 2, "lr_schedule": "cosine", "min_lr_ratio": 0.05}
    full, full_metrics, _ = run(make_cfg(tmp_path / "a", **kw))
    run(make_cfg(tmp_path / "b", **kw))
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-00000012")
    shutil.rmtree(tmp_path / "b" / "final")
    resumed, metrics, _ = run(make_cfg(tmp_path / "b", resume=str(tmp_path / "b" / "checkpoints" / "step-00000006"), **kw))
    assert [metrics[s]["lr"] for s in range(7, 13)] == pytest.approx([full_metrics[s]["lr"] for s in range(7, 13)])
    a, b = load_weights(full.final_dir, "model.safetensors"), load_weights(resumed.final_dir, "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_wsd_schedule_decays_linearly_over_its_last_fraction(tmp_path):
    """Warmup, constant, then linear down to min_lr_ratio * lr over the last decay_fraction of the
    post-warmup steps, reaching it exactly at the last step."""
    cfg = make_cfg(tmp_path / "out", steps=10, warmup_steps=2, lr=0.01, ckpt_every=100,
                   lr_schedule="wsd", decay_fraction=0.5, min_lr_ratio=0.2)
    _, metrics, _ = run(cfg)
    lrs = [metrics[s]["lr"] for s in range(1, 11)]
    decay = [1.0 - 0.8 * k / 4 for k in (1, 2, 3, 4)]  # 4 of the 8 post-warmup steps decay
    assert lrs == pytest.approx([0.005, 0.01, 0.01, 0.01, 0.01, 0.01, *(0.01 * d for d in decay)])
    assert lrs[-1] == pytest.approx(0.002)


def test_wsd_decay_from_a_constant_runs_checkpoint_equals_the_wsd_run(tmp_path):
    """Before its decay a wsd run is the constant run bit for bit, so resuming a constant run's
    checkpoint with lr_schedule wsd ends where a wsd run from scratch ends."""
    kw = {"steps": 12, "ckpt_every": 6, "warmup_steps": 2, "decay_fraction": 0.5}
    wsd, wsd_metrics, _ = run(make_cfg(tmp_path / "wsd", lr_schedule="wsd", **kw))
    const, _, _ = run(make_cfg(tmp_path / "const", lr_schedule="constant", **kw))
    a, c = load_weights(wsd.final_dir, "model.safetensors"), load_weights(const.final_dir, "model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the decay changed the last 5 steps
    resumed, metrics, _ = run(make_cfg(tmp_path / "decay", lr_schedule="wsd",
                                       resume=str(tmp_path / "const" / "checkpoints" / "step-00000006"), **kw))
    assert [metrics[s]["lr"] for s in range(7, 13)] == pytest.approx([wsd_metrics[s]["lr"] for s in range(7, 13)])
    b = load_weights(resumed.final_dir, "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_caption_dropout_rate_and_seed(tmp_path):
    def dropped_pattern(p: float, seed: int) -> list[bool]:
        cfg = make_cfg(tmp_path / f"p{p}-s{seed}", steps=16, caption_dropout=p, seed=seed, ckpt_every=100, resume="none")
        comp = build(cfg, record=False)
        inner, seen = comp.loss_fn, []

        def spy(model, batch):
            null = comp.model.null_caption(batch["y"].shape[0])[0][:, None]  # [B, 1, L, C] like y
            seen.extend(torch.isclose(batch["y"], null).flatten(1).all(1).tolist())
            return inner(model, batch)

        comp.loss_fn = spy
        run(cfg, comp)
        return seen

    assert not any(dropped_pattern(0.0, 0))
    assert all(dropped_pattern(1.0, 0))
    half = dropped_pattern(0.5, 0)
    assert len(half) == 64 and 0.3 < sum(half) / 64 < 0.7
    assert dropped_pattern(0.5, 0) == half
    assert dropped_pattern(0.5, 1) != half


def test_drop_captions_replaces_only_selected_rows():
    model = ToyVideoModel()
    y = torch.randn(3, 1, 4, 8)
    out = drop_captions(model, {"y": y, "mask": torch.ones(3, 4)}, torch.tensor([False, True, False]))
    assert torch.equal(out["y"][0], y[0]) and torch.equal(out["y"][2], y[2])
    null_y, null_mask = model.null_caption(1)
    assert torch.equal(out["y"][1], null_y) and null_mask.all()
    assert torch.equal(out["mask"], torch.ones(3, 4))  # the prompt's mask stays, as in the original


def test_grad_accumulation_and_epoch_cap(tmp_path):
    cfg = make_cfg(tmp_path / "out", steps=100, epochs=1, grad_accum_steps=2, ckpt_every=100)
    result, metrics, _ = run(cfg)
    assert result.step == 4  # 32 samples / 4 per batch = 8 batches = 4 steps of 2
    log = read_jsonl(tmp_path / "out" / "batches-rank0.jsonl")
    assert [(r["step"], r["micro"]) for r in log] == [(s, m) for s in range(1, 5) for m in (0, 1)]
    assert len({i for r in log for i in r["index"]}) == 32  # one epoch: every sample once
    assert metrics[4]["epoch"] == 0.0  # still epoch 0: its last batch was just consumed


def test_grad_checkpointing_gives_the_same_weights(tmp_path):
    plain, _, _ = run(make_cfg(tmp_path / "a", steps=3, ckpt_every=100))
    ckpt, _, comp = run(make_cfg(tmp_path / "b", steps=3, ckpt_every=100, grad_checkpointing=True))
    assert comp.model.grad_checkpointing
    a, b = load_weights(plain.final_dir), load_weights(ckpt.final_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_autocast_switch(tmp_path, monkeypatch):
    from soraflow import precision

    for native in (False, True):  # auto on CPU follows the CPU's bf16 units
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda native=native: native)
        assert use_bf16(TrainConfig(), torch.device("cpu")) is native
    assert use_bf16(TrainConfig(), torch.device("cuda"))
    assert use_bf16(TrainConfig(mixed_precision="bf16"), torch.device("cpu"))
    for mode, expected in (("bf16", True), ("fp32", False)):
        cfg = make_cfg(tmp_path / mode, steps=2, mixed_precision=mode, ckpt_every=100)
        comp = build(cfg, record=False)
        inner, seen = comp.loss_fn, []

        def spy(model, batch, inner=inner, seen=seen):
            seen.append(torch.is_autocast_enabled("cpu"))
            return inner(model, batch)

        comp.loss_fn = spy
        _, metrics, _ = run(cfg, comp)
        assert seen == [expected, expected]
        assert metrics[2]["loss"] == metrics[2]["loss"]


def test_cpu_bf16_detection_reads_cpuinfo_flags(tmp_path):
    from soraflow.precision import cpu_has_native_bf16

    with_flag, without = tmp_path / "a", tmp_path / "b"
    with_flag.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert cpu_has_native_bf16(str(with_flag)) and not cpu_has_native_bf16(str(without))
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))


def test_multi_stage_init_from(tmp_path):
    stage1, _, _ = run(make_cfg(tmp_path / "s1", steps=4, ckpt_every=4, ema_decay=0.5))
    # Stage 2 from the final folder: starts at stage 1's weights, EMA from stage 1's EMA.
    cfg2 = make_cfg(tmp_path / "s2", steps=2, ckpt_every=2, ema_decay=1.0, init_from=str(stage1.final_dir))
    comp = build(cfg2)
    start = {}
    comp.on_batch = lambda step, micro, batch: start or start.update(
        {k: v.detach().clone() for k, v in comp.model.state_dict().items()}
    )
    stage2, _, _ = run(cfg2, comp)
    s1 = load_weights(stage1.final_dir)
    assert all(torch.equal(start[k], s1[k]) for k in s1)
    s1_ema, s2_ema = load_weights(stage1.final_dir, "ema.safetensors"), load_weights(stage2.final_dir, "ema.safetensors")
    assert all(torch.equal(s1_ema[k], s2_ema[k]) for k in s1_ema)  # decay 1.0 keeps the loaded EMA
    assert load_train_state(Path(cfg2.output) / "checkpoints" / "step-00000002")["optimizer"]["state"][
        "out.weight"
    ]["step"].item() == 2

    # With the optimizer: AdamW's step count continues; lr comes from the new stage.
    ckpt1 = Path(stage1.final_dir).parent / "checkpoints" / "step-00000004"
    cfg3 = make_cfg(
        tmp_path / "s3", steps=2, ckpt_every=2, lr=3e-3, betas=(0.8, 0.95), init_from=str(ckpt1), init_optimizer=True
    )
    _, metrics, _ = run(cfg3)
    state = load_train_state(Path(cfg3.output) / "checkpoints" / "step-00000002")
    assert state["optimizer"]["state"]["out.weight"]["step"].item() == 6
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-3)
    assert tuple(state["optimizer"]["param_groups"][0]["betas"]) == (0.8, 0.95)
    assert metrics[1]["lr"] == pytest.approx(3e-3)

    # A final folder has no optimizer state to take.
    cfg4 = make_cfg(tmp_path / "s4", steps=1, init_from=str(stage1.final_dir), init_optimizer=True)
    with pytest.raises(RuntimeError, match="state.pt"):
        run(cfg4)


def test_adam_betas_reach_the_optimizer(tmp_path):
    default, _, _ = run(make_cfg(tmp_path / "a", steps=3, ckpt_every=3))
    lower, _, _ = run(make_cfg(tmp_path / "b", steps=3, ckpt_every=3, betas=(0.9, 0.5)))
    state = load_train_state(tmp_path / "b" / "checkpoints" / "step-00000003")["optimizer"]
    assert tuple(state["param_groups"][0]["betas"]) == (0.9, 0.5)
    # Same data and start: AdamW's bias-corrected first step does not depend on beta2, later ones do.
    w_default, w_lower = load_weights(default.final_dir), load_weights(lower.final_dir)
    assert any(not torch.allclose(w_default[k], w_lower[k]) for k in w_default)


def test_fsdp2_in_one_process(tmp_path):
    cfg = make_cfg(tmp_path / "out", steps=4, ckpt_every=2, strategy="fsdp2")
    result, metrics, _ = run(cfg)
    assert result.step == 4 and metrics[4]["loss"] < metrics[1]["loss"] * 1.5
    model = ToyVideoModel()
    model.load_state_dict(load_weights(result.final_dir))
    # and resumes
    resumed, _, _ = run(make_cfg(tmp_path / "out", steps=6, ckpt_every=2, strategy="fsdp2"))
    assert resumed.step == 6
    assert not torch.distributed.is_initialized()


def test_evaluate_hook_runs_when_due_and_joins_the_metric_line(tmp_path):
    """``Components.evaluate`` runs every ``evaluate_every`` steps and at the last step, with
    the unwrapped model in its training mode restored; its metrics join that step's line even
    between logging steps, and rates exclude its time. Training itself is unchanged."""
    import time as _time

    plain, _, _ = run(make_cfg(tmp_path / "plain", steps=7, log_every=5))
    cfg = make_cfg(tmp_path / "eval", steps=7, log_every=5)
    comp = build(cfg)
    calls: list[int] = []

    def evaluate(step, model):
        assert model is comp.model and model.training
        model.eval()
        with torch.random.fork_rng():
            torch.randn(100)  # an evaluation may draw noise, inside fork_rng
        _time.sleep(0.2)
        calls.append(step)
        model.train()
        return {"probe/step_seen": float(step)}

    comp.evaluate, comp.evaluate_every = evaluate, 3
    result, metrics, _ = run(cfg, comp)
    assert calls == [3, 6, 7]
    assert sorted(metrics) == [3, 5, 6, 7]  # 5: a plain logging step
    assert all(metrics[s]["probe/step_seen"] == s for s in (3, 6, 7)) and "probe/step_seen" not in metrics[5]
    assert metrics[3]["samples_per_s"] > 4 / 0.2  # the 0.2 s evaluation is not in the rate
    a, b = load_weights(plain.final_dir, "model.safetensors"), load_weights(result.final_dir, "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
