"""The repository's own commands explain themselves: ``make help``, ``scripts/with-prefect-server --help``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _phony_targets() -> list[str]:
    line = next(ln for ln in (REPO / "Makefile").read_text().splitlines() if ln.startswith(".PHONY:"))
    return line.split(":", 1)[1].split()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_help_describes_every_target():
    res = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    described = dict(re.findall(r"^  make (\S+)\s+(\S.*)$", res.stdout, flags=re.M))
    targets = _phony_targets()
    assert {"demo", "test", "install", "help"} <= set(targets)
    assert set(described) == set(targets), (sorted(described), targets)
    assert "dvc" in described["demo"].lower() or "pipeline" in described["demo"].lower()


def test_with_prefect_server_help_starts_no_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    script = REPO / "scripts" / "with-prefect-server"
    res = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: scripts/with-prefect-server COMMAND")
    bare = subprocess.run([str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert bare.returncode == 2
    assert "usage:" in bare.stdout
    assert not (tmp_path / "prefect").exists()  # no server was started (it writes its log there)
