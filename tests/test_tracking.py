"""The MLflow helper: stage runs nested under one pipeline run, tagged and with params."""

from __future__ import annotations

import mlflow
import yaml

from soraflow.config import Params
from soraflow.tracking import PIPELINE_TAG, hash_paths, stage_run


def test_stage_runs_share_a_pipeline_parent(tmp_path, mlflow_store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"demo": {"seed": 3}}))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"a": {"cmd": "x", "deps": ["dep.txt"]}}}))
    (tmp_path / "dep.txt").write_text("hello")
    params = Params.model_validate({"demo": {"seed": 3}})
    with stage_run("a", params) as run_a:
        mlflow.log_metric("m", 1.0)
    with stage_run("b", params) as run_b:
        pass
    client = mlflow.MlflowClient(mlflow_store)
    a = client.get_run(run_a.info.run_id)
    b = client.get_run(run_b.info.run_id)
    assert a.data.params["demo.seed"] == "3"
    assert a.data.tags["soraflow.stage"] == "a"
    assert a.data.tags[PIPELINE_TAG] == b.data.tags[PIPELINE_TAG]
    parent = a.data.tags["mlflow.parentRunId"]
    assert parent == b.data.tags["mlflow.parentRunId"]
    assert client.get_run(parent).data.tags["soraflow.role"] == "pipeline"
    assert a.data.tags["soraflow.dvc.deps_md5"] == hash_paths([tmp_path / "dep.txt"])
    assert b.data.tags["soraflow.dvc.deps_md5"] == "none"
    assert "mlflow.source.git.commit" in a.data.tags
    assert a.data.metrics["m"] == 1.0
    # A different params file is a different pipeline.
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"demo": {"seed": 4}}))
    with stage_run("a", params) as run_c:
        pass
    c = client.get_run(run_c.info.run_id)
    assert c.data.tags[PIPELINE_TAG] != a.data.tags[PIPELINE_TAG]


def test_hash_paths_changes_with_content(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_text("1")
    h1 = hash_paths([d])
    (d / "x").write_text("2")
    assert hash_paths([d]) != h1
