"""Training throughput: cached vs online features, 1 vs 2 processes, and the data-wait share.

Run from a checkout where the pipeline ran up to ``features`` (``dvc repro features``)::

    .venv/bin/python benchmarks/train.py [--steps 60] [--warmup 10] [--procs 1 --procs 2]
        [--modes cached --modes online] [--threads 1] [--log-every 1] [--set train.lr=1e-3 ...]

Each configuration launches the real worker (``python -m torch.distributed.run`` for more than
one process, gloo on CPU) with the params file plus overrides, for ``--steps`` steps into a
temporary folder, then reads rank 0's ``SORAFLOW_METRICS`` lines from its output (the
``metrics.jsonl`` in the model folder leaves the speed figures out). Figures are medians over the logged
windows (``--log-every`` steps each; 1 = every step) after ``--warmup`` steps: samples/s and
tokens/s over all ranks, and ``data_wait_frac`` (the share of step time spent waiting for the
next batch; the target with the cache is under 5%).
Samples/s of the online mode include the frozen VAE and text encoder (they run in the step).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from soraflow.training.metrics import parse_metrics_line


def run(mode: str, procs: int, args: argparse.Namespace, out: Path) -> dict[str, float]:
    overrides = {
        "train.use_feature_cache": "true" if mode == "cached" else "false",
        "train.nproc_per_node": str(procs),
        "train.prompt_eval_every": "0",
        "train.ckpt_every": str(10**6),
        "train.log_every": str(args.log_every),
        "train.resume": "none",
    }
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = value
    worker = [
        "-m", "soraflow.training.worker", "--params", args.params, "--steps", str(args.steps), "--output", str(out),
    ]
    for key, value in overrides.items():
        worker += ["--override", f"{key}={value}"]
    if procs == 1:
        cmd = [sys.executable, *worker]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), *worker]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{mode} x{procs} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = [{"step": step, **m} for step, m in filter(None, map(parse_metrics_line, proc.stdout.splitlines()))]
    rows = [r for r in rows if r["step"] > args.warmup]
    med = lambda key: statistics.median(r[key] for r in rows if key in r)  # noqa: E731
    return {
        "mode": mode,
        "procs": procs,
        "threads_per_proc": args.threads,
        "steps_measured": len(rows),
        "samples_per_s": round(med("samples_per_s"), 2),
        "tokens_per_s": round(med("tokens_per_s"), 1) if any("tokens_per_s" in r for r in rows) else None,
        "data_wait_frac": round(med("data_wait_frac"), 4),
        "final_loss": round(rows[-1]["loss"], 4) if rows else None,
        "wall_s": round(wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10, help="steps left out of the medians")
    ap.add_argument("--procs", type=int, action="append", help="processes per run (repeatable; default 1 and 2)")
    ap.add_argument("--modes", action="append", choices=["cached", "online"], help="default: both")
    ap.add_argument("--threads", type=int, default=1, help="OMP/torch threads per process")
    ap.add_argument(
        "--log-every", type=int, default=1,
        help="steps per metrics window (a log step is a collective: compare local SGD at the demo's 10)",
    )
    ap.add_argument("--set", action="append", default=[], help="extra params override KEY=VALUE")
    args = ap.parse_args()
    procs = args.procs or [1, 2]
    modes = args.modes or ["cached", "online"]
    results = []
    with tempfile.TemporaryDirectory(prefix="soraflow-bench-train-") as tmp:
        for mode in modes:
            for p in procs:
                r = run(mode, p, args, Path(tmp) / f"{mode}-{p}")
                results.append(r)
                print(json.dumps(r), flush=True)
    base = {(r["mode"], r["procs"]): r["samples_per_s"] for r in results}
    for p in procs:
        if ("cached", p) in base and ("online", p) in base and base[("online", p)] > 0:
            print(f"cached / online samples/s at {p} process(es): {base[('cached', p)] / base[('online', p)]:.2f}x")
    for mode in modes:
        if (mode, 1) in base and (mode, 2) in base and base[(mode, 1)] > 0:
            print(f"{mode}: 2 processes / 1 process samples/s: {base[(mode, 2)] / base[(mode, 1)]:.2f}x")
    cached = [r for r in results if r["mode"] == "cached"]
    if cached:
        worst = max(r["data_wait_frac"] for r in cached)
        print(f"data wait with the cache: {100 * worst:.1f}% of step time at most (target < 5%)")


if __name__ == "__main__":
    main()
