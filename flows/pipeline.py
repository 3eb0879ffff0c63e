"""The scheduled pipeline: the nightly flow and the deployments ``soraflow serve`` runs.

``nightly_flow`` runs the stage flows in order as subflows (by default: features, train,
evaluate, register with promotion), so one flow run in the Prefect UI shows the whole night.
The deployments (names, entrypoints, parameters, cron schedules) are read from
``prefect.yaml``, the single source for both ``prefect deploy`` (a Prefect server plus
workers of the ``soraflow-local`` process pool) and ``soraflow serve`` (one long-running
process that schedules and runs them itself, no work pool needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

#: Stage name -> (module, flow function); the order of ``nightly_flow``'s default stages.
STAGE_FLOWS: dict[str, tuple[str, str]] = {
    "curate": ("flows.curate", "curate_flow"),
    "vae": ("flows.vae", "vae_flow"),
    "features": ("flows.features", "features_flow"),
    "train": ("flows.train", "train_flow"),
    "evaluate": ("flows.evaluate", "evaluate_flow"),
    "register": ("flows.register", "register_flow"),
    "sample": ("flows.sample", "sample_flow"),
}
NIGHTLY_STAGES: tuple[str, ...] = ("features", "train", "evaluate", "register")


def _stage_flow(name: str):
    import importlib

    if name not in STAGE_FLOWS:
        raise ValueError(f"unknown stage {name!r}; known: {', '.join(STAGE_FLOWS)}")
    module, attr = STAGE_FLOWS[name]
    return getattr(importlib.import_module(module), attr)


@flow(name="nightly", log_prints=True)
def nightly_flow(
    params_path: str = "params.yaml",
    stages: list[str] | None = None,
    deployments: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``stages`` (default: features, train, evaluate, register) one after the other.

    ``deployments`` maps a stage to a deployment (``"train": "train/train-gpu"``): that stage
    then runs as a flow run of the deployment, on whatever work pool it names (a GPU pool),
    and the night waits for it. A failing stage fails the night: later stages (and the
    promotion) do not run, so a broken model can never become champion.
    """
    logger = get_run_logger()
    todo = list(stages) if stages is not None else list(NIGHTLY_STAGES)
    remote = dict(deployments or {})
    unknown = sorted(set(remote) - set(todo))
    if unknown:
        raise ValueError(f"deployments given for stages not run tonight: {', '.join(unknown)}")
    flows = [(name, None if name in remote else _stage_flow(name)) for name in todo]  # unknown names fail first
    results: dict[str, Any] = {}
    for name, stage in flows:
        if stage is None:
            from prefect.deployments import run_deployment

            logger.info("nightly: stage %s on deployment %s", name, remote[name])
            run = run_deployment(remote[name], parameters={"params_path": params_path}, timeout=None)
            if not run.state.is_completed():
                raise RuntimeError(f"stage {name}: deployment {remote[name]} ended {run.state.type.value}: {run.state.message}")
            results[name] = {"flow_run_id": str(run.id), "state": run.state.type.value}
        else:
            logger.info("nightly: stage %s", name)
            results[name] = stage(params_path=params_path)
    return results


# -- deployments --------------------------------------------------------------------------------
def read_prefect_yaml(path: str | Path = "prefect.yaml") -> list[dict[str, Any]]:
    """The ``deployments`` list of a prefect.yaml."""
    from soraflow.config_base import ConfigError
    from soraflow.yaml12 import load_yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    doc = load_yaml(path.read_text()) or {}
    deps = doc.get("deployments") or []
    if not isinstance(deps, list):
        raise ConfigError(f"{path}: deployments must be a list")
    return deps


def _schedules(spec: dict[str, Any]) -> list[Any]:
    from prefect.schedules import Cron, Interval

    out = []
    for s in spec.get("schedules") or []:
        active = s.get("active", True)
        if "cron" in s:
            out.append(Cron(s["cron"], timezone=s.get("timezone"), active=active))
        elif "interval" in s:
            out.append(Interval(s["interval"], timezone=s.get("timezone"), active=active))
    return out


def runner_deployments(prefect_yaml: str | Path = "prefect.yaml", names: list[str] | None = None) -> list[Any]:
    """Prefect ``RunnerDeployment`` objects for ``prefect.serve`` from prefect.yaml's deployments.

    Entrypoints (``path/to/file.py:flow_function``) are relative to the folder of prefect.yaml.
    ``names`` keeps only those deployments (all when None).
    """
    from prefect.flows import load_flow_from_entrypoint

    from soraflow.config_base import ConfigError

    base = Path(prefect_yaml).resolve().parent
    specs = read_prefect_yaml(prefect_yaml)
    known = [s.get("name") for s in specs]
    if names:
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ConfigError(f"{prefect_yaml}: no deployment named {', '.join(unknown)} (known: {', '.join(map(str, known))})")
    out = []
    for spec in specs:
        if names and spec.get("name") not in names:
            continue
        entry = str(spec["entrypoint"])
        file, _, func = entry.rpartition(":")
        path = Path(file) if Path(file).is_absolute() else base / file
        fl = load_flow_from_entrypoint(f"{path}:{func}", use_placeholder_flow=False)
        out.append(fl.to_deployment(
            name=spec["name"],
            description=spec.get("description"),
            parameters=spec.get("parameters") or {},
            schedules=_schedules(spec),
            tags=spec.get("tags"),
        ))
    return out


def serve_deployments(prefect_yaml: str | Path = "prefect.yaml", names: list[str] | None = None, limit: int | None = None) -> None:
    """Serve the deployments in this process until interrupted. Schedules stay active when it
    stops (``pause_on_shutdown=False``), so a restarted server (or a worker) picks them up."""
    from prefect import serve

    deployments = runner_deployments(prefect_yaml, names)
    serve(*deployments, pause_on_shutdown=False, limit=limit)


if __name__ == "__main__":
    from soraflow.cli import run_as_command

    run_as_command("nightly")
