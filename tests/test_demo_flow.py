"""Stage demo_data as a Prefect flow: writes the corpus and an MLflow run with its params."""

from __future__ import annotations

import mlflow
import pandas as pd
import yaml


def test_demo_data_flow_logs_a_stage_run(tmp_path, monkeypatch, mlflow_store, prefect_harness):
    from flows.demo_data import demo_data_flow

    monkeypatch.chdir(tmp_path)
    params = {"demo": {"output": "data/demo", "seed": 5, "num_videos": 3, "num_images": 1, "workers": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    metrics = demo_data_flow(params_path="params.yaml")

    videos = pd.read_parquet(tmp_path / "data/demo/videos.parquet")
    assert len(videos) == 4 and metrics["videos"] == 3 and metrics["images"] == 1
    runs = mlflow.search_runs(
        experiment_names=["soraflow"], filter_string="tags.`soraflow.stage` = 'demo_data'", output_format="list"
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["demo.seed"] == "5"
    assert run.data.params["demo.num_videos"] == "3"
    assert run.data.metrics["videos"] == 3
    assert run.data.tags["soraflow.role"] == "stage"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"params.yaml", "demo_corpus_contact_sheet.png"} <= artifacts
