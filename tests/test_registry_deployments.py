"""The deployments of prefect.yaml as `soraflow serve` builds them (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from soraflow.config_base import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_project_prefect_yaml_deployments() -> None:
    from flows.pipeline import runner_deployments

    deps = {d.name: d for d in runner_deployments(REPO / "prefect.yaml")}
    assert {"demo-data", "curate", "nightly", "sample", "promote"} <= set(deps)
    assert [(s.schedule.cron, s.active) for s in deps["curate"].schedules] == [("0 1 * * *", True)]
    assert [(s.schedule.cron, s.active) for s in deps["nightly"].schedules] == [("0 2 * * *", True)]
    assert deps["nightly"].entrypoint.endswith("flows/pipeline.py:nightly_flow")
    assert deps["promote"].parameters == {"params_path": "params.yaml", "rollback": False}
    raw = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert {d["work_pool"]["name"] for d in raw["deployments"]} == {"soraflow-local"}


def test_unknown_names_and_stages_fail_early(tmp_path) -> None:
    from flows.pipeline import NIGHTLY_STAGES, _stage_flow, runner_deployments

    with pytest.raises(ConfigError, match="no deployment named nope"):
        runner_deployments(REPO / "prefect.yaml", names=["nope"])
    with pytest.raises(ConfigError, match="file not found"):
        runner_deployments(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="unknown stage 'bogus'"):
        _stage_flow("bogus")
    assert NIGHTLY_STAGES == ("features", "train", "evaluate", "register")
    only = runner_deployments(REPO / "prefect.yaml", names=["promote"])
    assert [d.name for d in only] == ["promote"]
