"""Launching: the torchrun command line per topology, log streaming, metrics lines, failures."""

from __future__ import annotations

import sys
import textwrap

import pytest

from soraflow.training.cli import worker_args
from soraflow.training.config import TrainConfig
from soraflow.training.launch import TrainingLaunchError, build_launch_command, run_streaming
from soraflow.training.metrics import format_metrics_line, parse_metrics_line, read_metrics_file


def test_single_process_runs_the_worker_without_torchrun():
    cmd = build_launch_command(TrainConfig(), ["--params", "p.yaml"], python="py")
    assert cmd == ["py", "-m", "soraflow.training.worker", "--params", "p.yaml"]


def test_one_node_is_standalone():
    cmd = build_launch_command(TrainConfig(nproc_per_node=4), ["--steps", "3"], python="py")
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"]
    assert "--standalone" in cmd and "--rdzv-endpoint" not in cmd
    assert cmd[cmd.index("--nproc-per-node") + 1] == "4"
    assert cmd[-4:] == ["--module", "soraflow.training.worker", "--steps", "3"]


def test_multi_node_uses_c10d_rendezvous():
    cfg = TrainConfig(nproc_per_node=8, nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29400", rdzv_id="job7")
    cmd = build_launch_command(cfg, [], python="py")
    assert "--standalone" not in cmd

    def arg(flag):
        return cmd[cmd.index(flag) + 1]

    assert (arg("--nnodes"), arg("--node-rank"), arg("--nproc-per-node")) == ("2", "1", "8")
    assert (arg("--rdzv-backend"), arg("--rdzv-endpoint"), arg("--rdzv-id")) == ("c10d", "10.0.0.1:29400", "job7")


def test_worker_args_from_cli_options():
    args = worker_args("p.yaml", builder="toy", steps=5, resume="none", overrides={"train.nproc_per_node": 2})
    assert args == [
        "--params", "p.yaml", "--builder", "toy", "--steps", "5", "--resume", "none",
        "--override", "train.nproc_per_node=2",
    ]


def script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def test_streams_lines_and_metrics():
    lines, metrics = [], []
    line = format_metrics_line(3, {"loss": 0.5, "lr": 1e-4})
    rc = run_streaming(
        script(f"""
            import sys, time
            print("starting")
            print("progress\\r", end="", file=sys.stderr, flush=True)
            print({line!r}, flush=True)
            print("done")
        """),
        lines.append,
        on_metrics=lambda step, m: metrics.append((step, m)),
    )
    assert rc == 0
    assert lines == ["starting", "progress", "done"]
    assert metrics == [(3, {"loss": 0.5, "lr": 1e-4})]


def test_failure_raises_with_the_tail():
    lines = []
    with pytest.raises(TrainingLaunchError) as err:
        run_streaming(
            script("""
                import sys
                for i in range(200):
                    print(f"line {i}")
                print("non-finite loss nan at step 7", file=sys.stderr)
                sys.exit(3)
            """),
            lines.append,
        )
    assert err.value.returncode == 3
    assert "code 3" in str(err.value) and "non-finite loss nan at step 7" in str(err.value)
    assert "line 199" in str(err.value) and "line 5\n" not in str(err.value)  # only the tail
    assert len(lines) == 201


def test_logger_sink(caplog):
    import logging

    logger = logging.getLogger("test.train.sink")
    with caplog.at_level(logging.INFO, logger="test.train.sink"):
        run_streaming(script("print('hello from a worker')"), logger)
    assert "hello from a worker" in caplog.text


def test_metrics_file_keeps_the_resumed_lines(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n{"step": 2, "loss": 0.8}\n{"step": 3, "loss": 0.7}\n')
    assert read_metrics_file(p) == {1: {"loss": 1.0}, 2: {"loss": 0.8}, 3: {"loss": 0.7}}
    assert parse_metrics_line("[rank 0] no metrics here") is None
    assert parse_metrics_line("prefix " + format_metrics_line(9, {"a": 2})) == (9, {"a": 2.0})
