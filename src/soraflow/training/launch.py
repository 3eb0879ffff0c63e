"""Start the training workers with ``torchrun`` and stream their output to a logger.

One node: ``torchrun --standalone --nproc-per-node P``. Several nodes: run the same command on
every node with its ``train.node_rank``; they meet at ``train.rdzv_endpoint`` (c10d
rendezvous, e.g. a port on node 0)::

    # node 0 (10.0.0.1)                     # node 1
    soraflow train --nproc-per-node 8 ...   soraflow train --nproc-per-node 8 ...
    #   train.nnodes: 2, node_rank: 0          #   train.nnodes: 2, node_rank: 1
    #   rdzv_endpoint: 10.0.0.1:29500          #   rdzv_endpoint: 10.0.0.1:29500

A single process on a single node runs the worker with plain ``python -m`` (no torchrun, no
process group). Lines starting with ``SORAFLOW_METRICS`` become ``on_metrics`` calls instead
of log lines.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

from soraflow.training.config import TrainConfig
from soraflow.training.metrics import parse_metrics_line

log = logging.getLogger(__name__)

WORKER_MODULE = "soraflow.training.worker"
LogSink = Callable[[str], None] | logging.Logger


class TrainingLaunchError(RuntimeError):
    """The workers exited with a non-zero code; the message ends with the log's tail."""

    def __init__(self, message: str, returncode: int, tail: list[str]):
        super().__init__(message)
        self.returncode = returncode
        self.tail = tail


def build_launch_command(cfg: TrainConfig, worker_args: Sequence[str], python: str | None = None) -> list[str]:
    """The command line that starts every local worker of this node."""
    python = python or sys.executable
    if cfg.nproc_per_node == 1 and cfg.nnodes == 1:
        return [python, "-m", WORKER_MODULE, *worker_args]
    cmd = [python, "-m", "torch.distributed.run", "--nproc-per-node", str(cfg.nproc_per_node)]
    if cfg.nnodes == 1:
        cmd += ["--standalone"]
    else:
        cmd += [
            "--nnodes", str(cfg.nnodes),
            "--node-rank", str(cfg.node_rank),
            "--rdzv-backend", "c10d",
            "--rdzv-endpoint", cfg.rdzv_endpoint,
            "--rdzv-id", cfg.rdzv_id,
        ]
    return [*cmd, "--module", WORKER_MODULE, *worker_args]


def _sink(log_sink: LogSink | None) -> Callable[[str], None]:
    if log_sink is None:
        return lambda line: log.info("%s", line)
    if isinstance(log_sink, logging.Logger | logging.LoggerAdapter):
        return lambda line: log_sink.info("%s", line)
    return log_sink


def run_streaming(
    cmd: Sequence[str],
    log_sink: LogSink | None = None,
    *,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    tail_lines: int = 80,
) -> int:
    """Run ``cmd``, pass each output line (stdout and stderr merged) to ``log_sink``.

    Metrics lines go to ``on_metrics`` (and are not logged). Returns 0 or raises
    :class:`TrainingLaunchError` with the last ``tail_lines`` lines. Stopping the caller
    (Ctrl-C, a cancelled flow) terminates the whole process group of the workers.
    """
    sink = _sink(log_sink)
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,  # universal newlines: tqdm's \r refreshes arrive as lines
        bufsize=1,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            parsed = parse_metrics_line(line)
            if parsed is not None:
                if on_metrics is not None:
                    on_metrics(*parsed)
                continue
            tail.append(line)
            sink(line)
        rc = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    if rc != 0:
        text = "\n".join(tail)
        raise TrainingLaunchError(f"training exited with code {rc}; last lines:\n{text}", rc, list(tail))
    return rc


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the workers' process group, then SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def launch_torchrun(
    cfg: TrainConfig,
    worker_args: Sequence[str],
    log_sink: LogSink | None = None,
    *,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> int:
    """Launch this node's workers (``torchrun`` or one plain process) and wait for them.

    ``worker_args`` are the worker's arguments (``--params params.yaml --steps 20 ...``);
    ``log_sink`` is a logger (e.g. Prefect's ``get_run_logger()``) or a ``str -> None``
    function; ``on_metrics(step, metrics)`` receives rank 0's metrics as they are logged.
    Returns 0; raises :class:`TrainingLaunchError` (with the log's tail) on failure.
    """
    cmd = build_launch_command(cfg, worker_args)
    log.info("launching: %s", " ".join(cmd))
    return run_streaming(cmd, log_sink, on_metrics=on_metrics, env=env, cwd=cwd)
