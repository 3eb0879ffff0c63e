"""params.yaml validation: unknown keys, wrong types and out-of-range values name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from soraflow.config import ConfigError, Params, flatten_params, load_params

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_repository_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.demo.num_videos >= 48


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, {"demo": {"num_vidoes": 3}}))
    assert "demo.num_vidoes" in str(err.value)
    assert "unknown key" in str(err.value)


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match="tranin"):
        load_params(write(tmp_path, {"tranin": {}}))


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, {"demo": {"seed": "abc"}}))
    assert "demo.seed" in str(err.value) and "'abc'" in str(err.value)


def test_out_of_range_value(tmp_path):
    with pytest.raises(ConfigError, match=r"demo\.num_videos.*-1"):
        load_params(write(tmp_path, {"demo": {"num_videos": -1}}))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("demo: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(lst)


def test_flatten_params_uses_dotted_keys():
    flat = flatten_params(Params())
    assert flat["demo.seed"] == 0
    assert all("." in k for k in flat)


def test_cli_reports_bad_params_in_one_line_and_exit_code_2(tmp_path):
    bad = write(tmp_path, {"demo": {"num_videos": "many"}})
    proc = subprocess.run(
        [sys.executable, "-m", "soraflow.cli", "check-params", "--params", str(bad)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln]
    assert len(lines) == 1, proc.stderr
    assert "demo.num_videos" in lines[0] and "'many'" in lines[0]
    assert "Traceback" not in proc.stderr


def test_every_cli_command_has_help():
    from typer.testing import CliRunner

    from soraflow.cli import app

    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    import typer.main

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        res = runner.invoke(app, [name, "--help"])
        assert res.exit_code == 0, (name, res.output)
        assert cmd.help or cmd.short_help, f"command {name} has no help text"
        for sub in getattr(cmd, "commands", {}):
            res = runner.invoke(app, [name, sub, "--help"])
            assert res.exit_code == 0, (name, sub, res.output)
