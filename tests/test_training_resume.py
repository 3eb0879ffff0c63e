"""Exact resume across processes: a worker killed with SIGKILL at a random step after its
first checkpoint, then resumed with ``resume: auto``, ends with bitwise the same weights (model
and EMA) and trained on the same sequence of batches as an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from soraflow.training.checkpoint import load_weights

STEPS = 16
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def worker(params: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "soraflow.training.worker", "--params", str(params), "--builder", "toy",
        "--steps", str(STEPS), "--ckpt-every", "4", "--output", str(out), *extra,
    ]


def records(*paths: Path) -> dict[tuple, list]:
    """(step, micro) -> every logged value, over the given jsonl files in order."""
    out: dict[tuple, list] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            r = json.loads(line)
            out.setdefault((r["step"], r.get("micro", 0)), []).append(r.get("index", r.get("digest")))
    return out


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {
        "lr": 0.01, "deterministic": True, "caption_dropout": 0.5, "keep_last_k": 2, "log_every": 1, "seed": 3,
    }}))
    full, killed = tmp_path / "full", tmp_path / "killed"
    a = subprocess.Popen(worker(params, full), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(
        worker(params, killed, "--builder-opt", "step_delay=0.25"),
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    first = killed / "checkpoints" / "step-00000004" / "COMPLETE"
    deadline = time.monotonic() + 300
    while not first.exists():
        assert b.poll() is None, "the run to kill ended before its first checkpoint"
        assert time.monotonic() < deadline, "no first checkpoint within 300 s"
        time.sleep(0.02)
    delay = random.uniform(0.0, 1.5)  # lands anywhere from step 4 to ~10, mid-step or mid-save
    time.sleep(delay)
    b.send_signal(signal.SIGKILL)
    assert b.wait() == -signal.SIGKILL
    done = [json.loads(x)["step"] for x in (killed / "digests-rank0.jsonl").read_text().splitlines()]
    where = f"killed {delay:.2f} s after the first checkpoint, after step {max(done)}"
    assert max(done) < STEPS and not (killed / "final").exists(), where

    # A half-written checkpoint folder newer than any complete one must be ignored.
    stale = killed / "checkpoints" / ".tmp-step-00000099-0badf00d"
    stale.mkdir()
    (stale / "COMPLETE").write_text("{}")
    resumed = subprocess.run(worker(params, killed), env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr, where
    assert not stale.exists()
    assert a.wait(timeout=600) == 0, a.stderr.read()[-3000:]

    for name in ("model.safetensors", "ema.safetensors"):
        x, y = load_weights(full / "final", name), load_weights(killed / "final", name)
        assert x.keys() == y.keys()
        differ = [k for k in x if not torch.equal(x[k], y[k])]
        assert not differ, f"{name}: {len(differ)} tensors differ ({where})"
    # Same batches and same weights after every step; steps replayed after the kill agree too.
    for log in ("batches-rank0.jsonl", "digests-rank0.jsonl"):
        want, got = records(full / log), records(killed / log)
        assert sorted(want) == sorted(got), log
        for key, values in got.items():
            assert all(v == want[key][0] for v in values), f"{log} {key} ({where})"
