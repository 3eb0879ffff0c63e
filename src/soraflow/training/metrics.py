"""Per-step training metrics: loss (overall, by bucket, by timestep quarter), throughput, memory.

Every rank accumulates its micro-batches; once per optimizer step one small all-reduce sums
the loss statistics over ranks (that sum is also the NaN check), and at log steps the
per-bucket sums are gathered. Under local SGD (``sum_every_step=False``) a step's loss is the
rank's own and the sums over ranks are taken at log steps only. Metric names are MLflow-safe:

``loss``, ``loss_by_t/q1`` .. ``q4`` (timestep quarters, q1 = least noise), ``loss_by_bucket/<name>``,
``lr``, ``grad_norm``, ``samples_per_s``, ``tokens_per_s``, ``peak_memory_mb`` (CUDA max
allocated, or the process's peak RSS on CPU), ``data_wait_frac`` (share of wall time spent
waiting for batches), ``epoch``.

The speed and memory figures (:func:`is_run_measurement`) differ every time the same run runs;
the step log in the model folder leaves them out, so that folder is the same bytes for the same
training (DVC then skips the stages after it); they reach MLflow and ``metrics/train.json``.
"""

from __future__ import annotations

import re
from pathlib import Path
import resource
import time
from collections import defaultdict
from typing import Any

import torch

from soraflow.training.distributed import DistContext, all_gather_object, all_reduce_sum

QUARTERS = 4
# Layout of the per-step vector: loss sum, samples, tokens, then (sum, count) per quarter.
_VEC_LEN = 3 + 2 * QUARTERS


#: Figures of the machine and the hour, not of the maths (evaluation hooks add ``.../seconds``).
RUN_MEASUREMENTS = frozenset({"samples_per_s", "tokens_per_s", "data_wait_frac", "peak_memory_mb"})


def is_run_measurement(name: str) -> bool:
    """True for a speed or memory figure (wall-clock rates, waits, peak memory, durations)."""
    return name in RUN_MEASUREMENTS or name.endswith("/seconds")


def metric_name(bucket: Any) -> str:
    return "loss_by_bucket/" + re.sub(r"[^A-Za-z0-9_.\-]", "_", str(bucket))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class StepMetrics:
    """Accumulates micro-batch statistics into steps, and steps into a logging window."""

    def __init__(self, ctx: DistContext, num_timesteps: int, *, sum_every_step: bool = True):
        self.ctx = ctx
        self.sum_every_step = sum_every_step
        self.num_timesteps = num_timesteps
        self._step = torch.zeros(_VEC_LEN, dtype=torch.float64)
        self._window = torch.zeros(_VEC_LEN, dtype=torch.float64)
        self._buckets: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self._window_start = time.perf_counter()
        self._data_wait = 0.0

    def add_micro_batch(self, out: dict[str, Any], batch: dict[str, Any], tokens: int | None) -> None:
        loss = out["loss"].detach().float().reshape(-1).cpu().double()
        n = loss.numel()
        self._step[0] += loss.sum()
        self._step[1] += n
        self._step[2] += float(tokens or 0)
        t = out.get("t")
        if t is not None:
            q = (t.detach().float().reshape(-1).cpu() * QUARTERS / self.num_timesteps).floor().long()
            q = q.clamp(0, QUARTERS - 1)
            for k in range(QUARTERS):
                sel = q == k
                self._step[3 + 2 * k] += loss[sel].sum()
                self._step[4 + 2 * k] += sel.sum()
        bucket = out.get("bucket", batch.get("bucket"))
        if bucket is not None:
            names = [bucket] * n if isinstance(bucket, str) else [str(b) for b in bucket]
            if len(names) != n:
                names = [str(names[0])] * n
            for name, value in zip(names, loss.tolist(), strict=True):
                acc = self._buckets[name]
                acc[0] += value
                acc[1] += 1

    def add_data_wait(self, seconds: float) -> None:
        self._data_wait += seconds

    def end_step(self) -> float:
        """Sum this step's statistics over ranks (this rank's alone without ``sum_every_step``);
        return the step's mean loss (NaN-propagating)."""
        total = all_reduce_sum(self._step, self.ctx) if self.sum_every_step else self._step
        self._step = torch.zeros(_VEC_LEN, dtype=torch.float64)
        self._window += total
        return float(total[0] / max(total[1].item(), 1.0))

    def exclude_time(self, seconds: float) -> None:
        """Leave ``seconds`` (e.g. an evaluation between steps) out of the current window's rates."""
        self._window_start += seconds

    def window_metrics(self, *, lr: float, grad_norm: float, epoch: int) -> dict[str, float]:
        """Metrics of the steps since the last call; a collective (every rank must call it)."""
        elapsed = max(time.perf_counter() - self._window_start, 1e-9)
        w = self._window if self.sum_every_step else all_reduce_sum(self._window, self.ctx)
        gathered = all_gather_object(dict(self._buckets), self.ctx)
        out: dict[str, float] = {
            "loss": float(w[0] / max(w[1].item(), 1.0)),
            "lr": lr,
            "grad_norm": grad_norm,
            "samples_per_s": float(w[1]) / elapsed,
            "peak_memory_mb": peak_memory_mb(self.ctx.device),
            "data_wait_frac": min(self._data_wait / elapsed, 1.0),
            "epoch": float(epoch),
        }
        if w[2] > 0:
            out["tokens_per_s"] = float(w[2]) / elapsed
        for k in range(QUARTERS):
            if w[4 + 2 * k] > 0:
                out[f"loss_by_t/q{k + 1}"] = float(w[3 + 2 * k] / w[4 + 2 * k])
        merged: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for part in gathered:
            for name, (s, c) in part.items():
                merged[name][0] += s
                merged[name][1] += c
        for name, (s, c) in sorted(merged.items()):
            out[metric_name(name)] = s / c
        self._window = torch.zeros(_VEC_LEN, dtype=torch.float64)
        self._buckets = defaultdict(lambda: [0.0, 0.0])
        self._window_start = time.perf_counter()
        self._data_wait = 0.0
        return out


#: Rank 0 of a worker prints one line per logged step, ``SORAFLOW_METRICS {"step": .., ...}``;
#: :func:`soraflow.training.launch.launch_torchrun` turns those lines back into callbacks.
METRICS_PREFIX = "SORAFLOW_METRICS "


def format_metrics_line(step: int, metrics: dict[str, float]) -> str:
    import json

    return METRICS_PREFIX + json.dumps({"step": step, **metrics}, sort_keys=True)


def parse_metrics_line(line: str) -> tuple[int, dict[str, float]] | None:
    """``(step, metrics)`` from a metrics line (anywhere in the line), else None."""
    import json

    at = line.find(METRICS_PREFIX)
    if at < 0:
        return None
    try:
        data = json.loads(line[at + len(METRICS_PREFIX) :])
    except json.JSONDecodeError:
        return None
    step = int(data.pop("step"))
    return step, {k: float(v) for k, v in data.items()}


def read_metrics_file(path: str | Path) -> dict[int, dict[str, float]]:
    """A worker's ``metrics.jsonl``: step -> metrics; a resumed run's lines replace the killed run's."""
    import json

    out: dict[int, dict[str, float]] = {}
    p = Path(path)
    if not p.is_file():
        return out
    for line in p.read_text().splitlines():
        if line.strip():
            data = json.loads(line)
            step = int(data.pop("step"))
            out[step] = data
    return dict(sorted(out.items()))


#: The step-log columns of ``metrics/train_loss.csv`` and ``metrics/train_prompt_checks.csv``.
LOSS_COLUMNS = ("loss", "lr", "grad_norm")
PROMPT_COLUMNS = ("color_accuracy", "shape_accuracy", "direction_accuracy")


def write_curves(history: dict[int, dict[str, float]], folder: str | Path) -> list[Path]:
    """The step log as two CSV files for ``dvc plots`` (x = step): ``train_loss.csv`` (loss,
    lr, gradient norm at every logged step) and ``train_prompt_checks.csv`` (the prompt-following
    accuracies at the steps that measured them; only the header when none did)."""
    import pandas as pd

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    log = pd.DataFrame.from_dict(history, orient="index").sort_index().rename_axis("step")
    written = []
    tables = (("train_loss.csv", LOSS_COLUMNS, ""), ("train_prompt_checks.csv", PROMPT_COLUMNS, "prompt/"))
    for name, columns, prefix in tables:
        table = log.reindex(columns=[prefix + c for c in columns]).dropna()
        table.columns = list(columns)
        path = folder / name
        table.to_csv(path)
        written.append(path)
    return written
