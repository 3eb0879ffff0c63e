"""MLflow runs for pipeline stages: one helper, the same tags everywhere.

Every stage opens its run through :func:`stage_run`. Defaults are embedded (a sqlite
tracking database ``mlflow.db`` and an artifact folder ``mlartifacts/`` in the project
root); ``MLFLOW_TRACKING_URI`` points at a server instead. Runs of one pipeline (one
``dvc repro`` over the same commit and params) are grouped under a parent run that carries
the tag ``soraflow.pipeline``; each stage run is tagged with its stage, the git commit, a hash
of the stage's DVC dependencies and the params file's hash, and logs every param.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from soraflow.config import flatten_params
from soraflow.yaml12 import load_yaml

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "soraflow"
PIPELINE_TAG = "soraflow.pipeline"
MAX_PARAM_LENGTH = 6000


def project_root(start: Path | None = None) -> Path:
    """The folder holding ``dvc.yaml`` (or ``.git``), searching upwards; else the cwd."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists() or (folder / ".git").exists():
            return folder
    return here


def tracking_uri(root: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded sqlite database in the project root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(root or project_root()) / 'mlflow.db'}"


def artifact_location(root: Path | None = None) -> str | None:
    """Where a new experiment stores artifacts: ``SORAFLOW_ARTIFACT_ROOT``; else, against a
    tracking server, the server's own (proxied) artifact root (None); else ``mlartifacts/``."""
    loc = os.environ.get("SORAFLOW_ARTIFACT_ROOT")
    if loc:
        return loc
    if os.environ.get("MLFLOW_TRACKING_URI", "").startswith(("http://", "https://")):
        return None
    return ((root or project_root()) / "mlartifacts").as_uri()


def configure_mlflow(experiment: str | None = None) -> str:
    """Point MLflow at the tracking store and make sure the experiment exists; returns its id."""
    import mlflow

    root = project_root()
    mlflow.set_tracking_uri(tracking_uri(root))
    name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        exp_id = mlflow.create_experiment(name, artifact_location=artifact_location(root))
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit(root: Path | None = None) -> str:
    """The HEAD commit (with ``-dirty`` when tracked files changed), or ``unknown`` outside git."""
    cwd = root or project_root()
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def hash_paths(paths: list[Path]) -> str:
    """md5 over the contents of files and folders (sorted walk), as a data version."""
    h = hashlib.md5()
    for path in sorted(paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if not f.exists():
                continue
            h.update(str(f.relative_to(path.parent) if path.is_dir() else f.name).encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def dvc_stage_deps(stage: str, root: Path | None = None) -> list[Path]:
    """The dependency paths of a stage as declared in ``dvc.yaml`` (empty when not declared)."""
    root = root or project_root()
    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.exists():
        return []
    spec = (load_yaml(dvc_yaml.read_text()) or {}).get("stages", {}).get(stage, {})
    return [root / d for d in spec.get("deps", []) if isinstance(d, str)]


def pipeline_id(params_path: str | Path = "params.yaml", root: Path | None = None) -> str:
    """Identifies one pipeline execution: ``SORAFLOW_PIPELINE_ID`` or hash(commit, params, dvc.yaml)."""
    env = os.environ.get("SORAFLOW_PIPELINE_ID")
    if env:
        return env
    root = root or project_root()
    h = hashlib.sha1(git_commit(root).encode())
    for f in (Path(params_path), root / "dvc.yaml"):
        if f.exists():
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _parent_run_id(experiment_id: str, pid: str) -> str:
    import mlflow

    found = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{PIPELINE_TAG}` = '{pid}' and tags.`soraflow.role` = 'pipeline'",
        max_results=1,
        output_format="list",
    )
    if found:
        return found[0].info.run_id
    client = mlflow.MlflowClient()
    run = client.create_run(
        experiment_id,
        run_name=f"pipeline-{pid[:8]}",
        tags={PIPELINE_TAG: pid, "soraflow.role": "pipeline", "mlflow.source.git.commit": git_commit()},
    )
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def params_for_logging(params: BaseModel | dict[str, Any]) -> dict[str, str]:
    flat = flatten_params(params) if isinstance(params, BaseModel) else params
    return {k: str(v)[:MAX_PARAM_LENGTH] for k, v in flat.items()}


@contextmanager
def stage_run(
    stage: str,
    params: BaseModel | None = None,
    *,
    params_path: str | Path = "params.yaml",
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    log_system_metrics: bool = False,
) -> Iterator[Any]:
    """Open the MLflow run of one pipeline stage, nested under the pipeline's parent run.

    Yields the active ``mlflow.ActiveRun``; inside, use plain ``mlflow.log_*`` calls.
    """
    import mlflow

    exp_id = configure_mlflow()
    root = project_root()
    pid = pipeline_id(params_path, root)
    parent = _parent_run_id(exp_id, pid)
    deps = dvc_stage_deps(stage, root)
    all_tags = {
        "soraflow.stage": stage,
        PIPELINE_TAG: pid,
        "soraflow.role": "stage",
        "mlflow.source.git.commit": git_commit(root),
        "soraflow.dvc.stage": stage,
        "soraflow.dvc.deps_md5": hash_paths(deps) if deps else "none",
    }
    if Path(params_path).exists():
        all_tags["soraflow.params_md5"] = hashlib.md5(Path(params_path).read_bytes()).hexdigest()
    all_tags.update(tags or {})
    with mlflow.start_run(
        experiment_id=exp_id,
        run_name=run_name or stage,
        parent_run_id=parent,
        tags=all_tags,
        log_system_metrics=log_system_metrics,
    ) as run:
        if params is not None:
            mlflow.log_params(params_for_logging(params))
        if Path(params_path).exists():
            mlflow.log_artifact(str(params_path))
        log.info("MLflow run %s (stage %s) in %s", run.info.run_id, stage, mlflow.get_tracking_uri())
        yield run
