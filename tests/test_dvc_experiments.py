"""The README's way to compare two runs: ``make exp-save`` records a finished run (its dvc.lock,
params and ``metrics/``) as a DVC experiment, ``make exp`` runs another, and ``dvc exp show``,
``dvc metrics diff`` and ``dvc plots diff`` compare the two.

Runs on a tiny DVC project (one stage writing a metric and a curve from a param) with the
repository's Makefile. Without ``--include-untracked metrics`` the saved run would carry no
metrics in a fresh clone (``metrics/`` is not in git there), and the comparison would show none.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("git") is None or not (BIN / "dvc").exists(),
    reason="needs make, git and dvc",
)

STAGE = """\
stages:
  double:
    cmd: python write_metrics.py
    deps:
      - write_metrics.py
    params:
      - x
    metrics:
      - metrics/m.json:
          cache: false
    plots:
      - metrics/curve.csv:
          x: step
          y: loss
          cache: false
"""

WRITER = """\
import json, pathlib, yaml
x = yaml.safe_load(open("params.yaml"))["x"]
out = pathlib.Path("metrics")
out.mkdir(exist_ok=True)
(out / "m.json").write_text(json.dumps({"y": 2 * x}))
(out / "curve.csv").write_text(f"step,loss\\n0,{x}\\n1,{2 * x}\\n")
"""


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"{args}: {res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.fixture()
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DVC_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", DVC_NO_ANALYTICS="1")
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("x: 1\n")
    (root / "dvc.yaml").write_text(STAGE)
    (root / "write_metrics.py").write_text(WRITER)
    _run(["git", "init", "-q"], root, env)
    # the identity for git's commit here and DVC's experiment commits (both read the repo's config)
    _run(["git", "config", "user.name", "soraflow"], root, env)
    _run(["git", "config", "user.email", "ci@soraflow.invalid"], root, env)
    _run(["dvc", "init", "-q"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-q", "-m", "a tiny pipeline"], root, env)
    return root, env


def _experiment_metrics(root: Path, env: dict[str, str]) -> dict[str, str]:
    rows = csv.DictReader(io.StringIO(_run(["dvc", "exp", "show", "--csv", "--no-pager"], root, env)))
    return {row["Experiment"]: row["y"] for row in rows if row["Experiment"]}


def test_a_saved_run_and_an_experiment_compare(project):
    root, env = project
    _run(["dvc", "repro", "-q"], root, env)  # what `make demo` runs
    assert json.loads((root / "metrics" / "m.json").read_text()) == {"y": 2}
    assert subprocess.run(["git", "ls-files", "--error-unmatch", "metrics/m.json"], cwd=root, env=env,
                          capture_output=True).returncode != 0  # untracked, as in a fresh clone after `make demo`

    _run(["make", "-s", "-f", str(REPO / "Makefile"), "-C", str(root), "exp-save", "NAME=base", f"BIN={BIN}"], root, env)
    dry = _run(["make", "-n", "-f", str(REPO / "Makefile"), "-C", str(root), "exp", "NAME=more", "SET=x=3",
                f"BIN={BIN}", "STAMP="], root, env)
    command = next(line for line in dry.splitlines() if "dvc exp run" in line)
    assert command.endswith("dvc exp run --name more --set-param x=3"), command
    _run(["dvc", "exp", "run", "-q", "--name", "more", "--set-param", "x=3"], root, env)  # what `make exp` runs

    assert _experiment_metrics(root, env) == {"base": "2", "more": "6"}
    diff = json.loads(_run(["dvc", "metrics", "diff", "base", "more", "--json"], root, env))
    assert diff["metrics/m.json"]["y"] == {"old": 2, "new": 6, "diff": 4}
    _run(["dvc", "plots", "diff", "base", "more", "-o", str(root / "plots")], root, env)
    page = (root / "plots" / "index.html").read_text()
    assert "base" in page and "more" in page
