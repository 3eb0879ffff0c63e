"""End to end through real servers: a Prefect server and an MLflow server on 127.0.0.1 (random
free ports) run the register and sample flows on a tiny model; `soraflow serve` serves
deployments from a prefect.yaml, a deployment run completes, schedules survive shutdown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from sampling_helpers import mlflow_template_db, write_model_folder, write_vae_folder  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f} s")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def _run(code: str, env: dict, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_pipeline_through_prefect_and_mlflow_servers(tmp_path, mlflow_template_db) -> None:
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    project = tmp_path / "project"
    write_vae_folder(project / "models" / "vae")
    write_model_folder(project / "models" / "train" / "final", "models/vae")
    (project / "metrics").mkdir()
    (project / "metrics" / "eval.json").write_text(json.dumps(
        {"color_accuracy": 0.6, "shape_accuracy": 0.5, "direction_accuracy": 0.4, "fid": 12.0}))
    (project / "params.yaml").write_text(yaml.safe_dump({
        "sample": {"model": "models:/soraflow-stdit@champion", "prompts": ["a red circle moving left on a black background",
                   "a blue square moving up on a white background"], "num_frames": 8, "height": 32, "width": 32,
                   "steps": 2, "min_display_size": 32, "output": "data/samples"},
    }))
    prefect_port, mlflow_port = _free_port(), _free_port()
    prefect_url = f"http://127.0.0.1:{prefect_port}/api"
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    shutil.copy(mlflow_template_db, tmp_path / "mlflow-server.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "SORAFLOW_"))}
    env.update({
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": prefect_url,
        "MLFLOW_TRACKING_URI": mlflow_url,
        "SORAFLOW_ARTIFACT_ROOT": "mlflow-artifacts:/soraflow",
        "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    servers: list[subprocess.Popen] = []
    serve = None
    try:
        server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
        servers.append(subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
            env=server_env, cwd=tmp_path, stdout=open(tmp_path / "prefect.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        ))
        servers.append(subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow-server.db'}",
             "--artifacts-destination", str(tmp_path / "mlflow-artifacts")],
            env=server_env, cwd=tmp_path, stdout=open(tmp_path / "mlflow.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        ))
        _wait_http(f"{prefect_url}/health", servers[0])
        _wait_http(f"{mlflow_url}/health", servers[1])

        # 1. the register stage (auto-promotes the first version) and the sample stage from the champion
        _run("from flows.register import register_flow; register_flow('params.yaml')", env, project)
        _run("from flows.sample import sample_flow; sample_flow('params.yaml')", env, project)

        client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
        champion = client.get_model_version_by_alias("soraflow-stdit", "champion")
        assert str(champion.version) == "1"
        assert float(champion.tags["metric.color_accuracy"]) == 0.6
        assert champion.tags["soraflow.decision"] == "promoted"
        sample_runs = client.search_runs(
            [client.get_experiment_by_name("soraflow").experiment_id], "tags.`soraflow.stage` = 'sample'")
        assert len(sample_runs) == 1
        logged = {a.path for a in client.list_artifacts(sample_runs[0].info.run_id, "samples")}
        assert len([p for p in logged if p.endswith(".mp4")]) == 2 and len([p for p in logged if p.endswith(".gif")]) == 2
        index = json.loads((project / "data" / "samples" / "samples.json").read_text())
        assert index["model"] == "models:/soraflow-stdit@champion" and len(index["samples"]) == 2

        # 2. `soraflow serve` from a prefect.yaml: a scheduled deployment and an on-demand one
        (project / "prefect.yaml").write_text(yaml.safe_dump({"deployments": [
            {"name": "promote", "entrypoint": str(REPO / "flows" / "register.py") + ":promote_flow",
             "parameters": {"params_path": "params.yaml", "rollback": False}},
            {"name": "nightly", "entrypoint": str(REPO / "flows" / "pipeline.py") + ":nightly_flow",
             "parameters": {"params_path": "params.yaml", "stages": ["register"]},
             "schedules": [{"cron": "0 2 * * *", "timezone": "UTC", "active": True}]},
        ]}))
        serve = subprocess.Popen(
            [str(BIN / "soraflow"), "serve", "--prefect-yaml", "prefect.yaml"], env=env, cwd=project,
            stdout=open(tmp_path / "serve.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        with temporary_settings({PREFECT_API_URL: prefect_url}):
            deadline = time.monotonic() + 180
            with get_client(sync_client=True) as pc:
                while True:
                    deps = {d.name: d for d in pc.read_deployments()}
                    if {"promote", "nightly"} <= set(deps):
                        break
                    assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                    assert time.monotonic() < deadline, "deployments never appeared"
                    time.sleep(1)
                nightly_schedules = pc.read_deployment_schedules(deps["nightly"].id)
                assert [(s.schedule.cron, s.active) for s in nightly_schedules] == [("0 2 * * *", True)]
            run = run_deployment("promote/promote", timeout=300)
            assert run.state.is_completed(), run.state
            _stop(serve)
            with get_client(sync_client=True) as pc:
                assert all(s.active for s in pc.read_deployment_schedules(deps["nightly"].id))  # not paused on shutdown
                flows = {f.id: f.name for f in pc.read_flows()}
                done = [(flows[r.flow_id], r.state.type.value) for r in pc.read_flow_runs()]
        assert ("register", "COMPLETED") in done and ("sample", "COMPLETED") in done and ("promote", "COMPLETED") in done
        decision = json.loads((project / "metrics" / "promotion.json").read_text())
        assert decision["promoted"] is False and "already the champion" in decision["reason"]
    finally:
        _stop(serve)
        for proc in servers:
            _stop(proc)
