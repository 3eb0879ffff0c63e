"""``python flows/<stage>.py [OPTIONS]`` is ``soraflow <command> [OPTIONS]``.

The flow files used to call their flow with its defaults whatever the command line said, so
``python flows/train.py --help`` started a training run. Each now hands its arguments to the
``soraflow`` command of its stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
#: flow file -> the ``soraflow`` command it runs
COMMANDS = {"demo_data": "demo-data", "pipeline": "nightly"}


def _scripts() -> list[Path]:
    return sorted(p for p in (REPO / "flows").glob("*.py") if 'if __name__ == "__main__":' in p.read_text())


def _run_all(args: list[str], cwd: Path, names: set[str] | None = None) -> dict[str, subprocess.CompletedProcess]:
    """Each flow script (or those in ``names``) with ``args``, all at once (each start imports torch: ~3.5 s)."""
    procs = {
        p.stem: subprocess.Popen(
            [sys.executable, str(p), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        )
        for p in _scripts()
        if names is None or p.stem in names
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return out


def test_every_stage_flow_file_is_a_command():
    names = {p.stem for p in _scripts()}
    assert {"curate", "demo_data", "vae", "features", "train", "evaluate", "sample", "register", "pipeline"} <= names


@pytest.mark.timeout(600)
def test_flow_scripts_print_their_commands_help_and_reject_unknown_options(tmp_path):
    # run outside the repo: a script that ran its flow instead would fail on the missing params.yaml
    helped = _run_all(["--help"], tmp_path)
    for name, res in helped.items():
        command = COMMANDS.get(name, name)
        assert res.returncode == 0, (name, res.stdout, res.stderr)
        assert f"Usage: soraflow {command} [OPTIONS]" in res.stdout, (name, res.stdout)
        assert "--params" in res.stdout, name
        assert "Beginning flow run" not in res.stdout + res.stderr, name
    assert list(tmp_path.iterdir()) == []  # nothing written: no stage ran

    wrong = _run_all(["--no-such-option"], tmp_path, {"train", "pipeline"})  # the arguments reach the command
    assert set(wrong) == {"train", "pipeline"}
    for name, res in wrong.items():
        assert res.returncode == 2, (name, res.stdout, res.stderr)
        assert "No such option: --no-such-option" in res.stderr, (name, res.stderr)


def test_nightly_command_passes_stages_and_deployments(monkeypatch):
    import flows.pipeline
    from soraflow.cli import app

    seen = {}

    def fake_nightly(params_path, stages, deployments):
        seen.update(params_path=params_path, stages=stages, deployments=deployments)
        return {"features": {"cached": 3}}

    monkeypatch.setattr(flows.pipeline, "nightly_flow", fake_nightly)
    runner = CliRunner()
    res = runner.invoke(app, ["nightly", "-p", "other.yaml", "--stage", "features", "--stage", "train",
                              "--deployment", "train=train/train-gpu"])
    assert res.exit_code == 0, res.output
    assert seen == {"params_path": "other.yaml", "stages": ["features", "train"], "deployments": {"train": "train/train-gpu"}}
    assert '"cached": 3' in res.output

    seen.clear()
    res = runner.invoke(app, ["nightly"])
    assert res.exit_code == 0, res.output
    assert seen == {"params_path": "params.yaml", "stages": None, "deployments": None}

    res = runner.invoke(app, ["nightly", "--deployment", "train"])
    assert res.exit_code == 2
    assert "expected STAGE=DEPLOYMENT" in res.output
    assert seen == {"params_path": "params.yaml", "stages": None, "deployments": None}  # not called again
