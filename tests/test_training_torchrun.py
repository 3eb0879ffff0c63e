"""Real ``torchrun`` runs with 2 CPU processes (gloo) on the toy model, started through the
``soraflow train`` command function: loss falls, both ranks hold the same weights after every
step, data is sharded, and a run resumed from a checkpoint ends bitwise where the
uninterrupted run ends (an evaluation that every rank joins changes nothing). DDP (~20 s on 2 idle cores) in the fast suite, FSDP2 marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from soraflow.training.checkpoint import load_weights
from soraflow.training.cli import train_command
from soraflow.training.metrics import read_metrics_file

STEPS = 12


@pytest.fixture(autouse=True)
def _flow_environment(tmp_path, monkeypatch, mlflow_store, prefect_harness):
    """`soraflow train` runs the Prefect flow, which tracks to MLflow and writes metrics/."""
    monkeypatch.chdir(tmp_path)


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("train")(train_command)
    app.command("noop", hidden=True)(lambda: None)  # keep "train" a subcommand
    return app


def train(params: Path, out: Path, *extra: str, expect: int = 0) -> str:
    result = CliRunner().invoke(
        cli(),
        ["train", "--params", str(params), "--builder", "toy", "--nproc-per-node", "2", "--steps", str(STEPS),
         "--ckpt-every", "4", "--output", str(out), *extra],
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.exit_code == expect, (result.output, result.exception)
    return result.output


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_params(tmp_path: Path, **train) -> Path:
    p = tmp_path / "params.yaml"
    base = {"lr": 0.01, "deterministic": True, "keep_last_k": 0, "log_every": 1, "seed": 5}
    p.write_text(yaml.safe_dump({"train": {**base, **train}}))
    return p


def check_run(out: Path, resumed_from: int = 0) -> None:
    d0, d1 = jsonl(out / "digests-rank0.jsonl"), jsonl(out / "digests-rank1.jsonl")
    assert [r["step"] for r in d0] == list(range(resumed_from + 1, STEPS + 1))
    assert d0 == d1, "ranks hold different weights"
    b0, b1 = jsonl(out / "batches-rank0.jsonl"), jsonl(out / "batches-rank1.jsonl")
    for r0, r1 in zip(b0, b1, strict=True):
        assert r0["step"] == r1["step"] and not set(r0["index"]) & set(r1["index"]), "ranks saw the same samples"


def compare_finals(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "ema.safetensors"):
        x, y = load_weights(a / "final", name), load_weights(b / "final", name)
        assert all(torch.equal(x[k], y[k]) for k in x), name


def _check_mlflow_run(out: Path) -> None:
    """The train stage's MLflow run: loss curve, the model folder, the checkpoints index and
    the newest checkpoint (small enough to upload)."""
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`soraflow.stage` = 'train'",
                              output_format="list", order_by=["attributes.start_time ASC"])
    assert len(runs) == 2  # the full run, then the resumed one
    run = runs[0]
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")) == STEPS
    speed = mlflow.MlflowClient().get_metric_history(run.info.run_id, "samples_per_s")
    assert len(speed) == STEPS and all(m.value > 0 for m in speed)
    index = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/checkpoints.json")
    assert [c["step"] for c in index["checkpoints"]] == [4, 8, 12] and index["uploaded"] == "step-00000012"
    assert all(Path(c["path"]).is_dir() and c["mb"] > 0 for c in index["checkpoints"])
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "checkpoints/step-00000012")}
    assert "checkpoints/step-00000012/model.safetensors" in names
    assert any(a.path == "model" for a in mlflow.MlflowClient().list_artifacts(run.info.run_id))


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp2", marks=pytest.mark.slow)])
def test_two_ranks_learn_in_lockstep_and_resume_exactly(tmp_path, strategy):
    params = write_params(tmp_path, strategy=strategy, caption_dropout=0.3)
    full = tmp_path / "full"
    train(params, full, "--builder-opt", "gather_eval_every=5")  # an evaluation every rank joins
    check_run(full)
    metrics = read_metrics_file(full / "metrics.jsonl")
    gathered = {s: (m["probe/ranks_gathered"], m["probe/rank_sum"]) for s, m in metrics.items() if "probe/rank_sum" in m}
    assert gathered == {5: (2.0, 1.0), 10: (2.0, 1.0), 12: (2.0, 1.0)}
    assert sorted(metrics) == list(range(1, STEPS + 1))
    early = sum(metrics[s]["loss"] for s in (1, 2, 3)) / 3
    late = sum(metrics[s]["loss"] for s in (10, 11, 12)) / 3
    assert late < 0.8 * early, (early, late)
    assert all(m["grad_norm"] > 0 for m in metrics.values())
    seen = {k for m in metrics.values() for k in m if k.startswith("loss_by_bucket/")}
    assert seen == {"loss_by_bucket/2x4x4", "loss_by_bucket/1x4x8"}
    # speed figures go to MLflow and metrics/train.json, not into the model folder's step log
    assert not {k for m in metrics.values() for k in m} & {"samples_per_s", "tokens_per_s", "data_wait_frac", "peak_memory_mb"}
    summary = json.loads(Path("metrics/train.json").read_text())
    assert summary["final_step"] == STEPS and summary["samples_per_s"] > 0 and summary["loss"] == metrics[STEPS]["loss"]
    curve = Path("metrics/train_loss.csv").read_text().splitlines()
    assert curve[0] == "step,loss,lr,grad_norm" and len(curve) == STEPS + 1
    assert [float(v) for v in curve[-1].split(",")[:2]] == [STEPS, metrics[STEPS]["loss"]]

    # Resume the second checkpoint of that run into another folder: same end, bitwise.
    resumed = tmp_path / "resumed"
    train(params, resumed, "--resume", str(full / "checkpoints" / "step-00000004"))
    check_run(resumed, resumed_from=4)
    compare_finals(full, resumed)
    assert jsonl(resumed / "batches-rank1.jsonl") == jsonl(full / "batches-rank1.jsonl")[4:]
    if strategy == "ddp":
        _check_mlflow_run(full)  # after the CLI runs: MLflow client calls between them upset their logging


def test_nan_on_one_rank_stops_every_rank(tmp_path):
    """Rank 1 alone sees a NaN loss at step 6: both ranks stop (no hang), a non-zero exit, the
    message names the step and the last good checkpoint, which holds finite weights. (torchrun
    exits 1 when a worker fails; the worker itself exits 3.)"""
    params = write_params(tmp_path)
    out = tmp_path / "out"
    output = train(params, out, "--builder-opt", "nan_at_step=6", "--builder-opt", "nan_rank=1", expect=1)
    assert "non-finite loss nan at step 6" in output and "step-00000004" in output, output
    assert output.count("non-finite loss nan at step 6") >= 2  # both ranks stopped on their own
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000004"]
    assert all(torch.isfinite(t).all() for t in load_weights(out / "checkpoints" / "step-00000004").values())
    assert not (out / "final").exists()


def test_local_sgd_averages_weights_on_schedule_and_resumes_exactly(tmp_path):
    """``average_every: 3`` (local SGD): each rank steps on its own gradients, so the ranks' weights
    differ between averagings and are equal right after each one (every 3rd step, every
    checkpoint, every evaluation); the loss still falls; a run resumed from a checkpoint ends
    bitwise where the uninterrupted run ends (the checkpoint also averaged Adam's moments; the
    evaluations, which average too, come at the same steps)."""
    params = write_params(tmp_path, average_every=3, broadcast_buffers=False)
    full = tmp_path / "full"
    output = train(params, full, "--builder-opt", "gather_eval_every=5")
    d0, d1 = jsonl(full / "digests-rank0.jsonl"), jsonl(full / "digests-rank1.jsonl")
    same = {r0["step"] for r0, r1 in zip(d0, d1, strict=True) if r0 == r1}
    assert same == {3, 4, 5, 6, 8, 9, 10, 12}, (same, output[-2000:])
    metrics = read_metrics_file(full / "metrics.jsonl")
    assert sorted(metrics) == list(range(1, STEPS + 1))
    early = sum(metrics[s]["loss"] for s in (1, 2, 3)) / 3
    late = sum(metrics[s]["loss"] for s in (10, 11, 12)) / 3
    assert late < 0.8 * early, (early, late)
    assert {metrics[s]["probe/ranks_gathered"] for s in (5, 10, 12)} == {2.0}

    resumed = tmp_path / "resumed"
    train(params, resumed, "--resume", str(full / "checkpoints" / "step-00000004"), "--builder-opt", "gather_eval_every=5")
    compare_finals(full, resumed)
    assert jsonl(resumed / "digests-rank1.jsonl") == d1[4:]


def test_local_sgd_needs_ddp():
    from pydantic import ValidationError

    from soraflow.training.config import TrainConfig

    with pytest.raises(ValidationError, match="average_every=4 .local SGD. needs strategy ddp"):
        TrainConfig(average_every=4, strategy="fsdp2")
    assert TrainConfig(average_every=4).average_every == 4
