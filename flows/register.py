"""Stage ``register``: log the trained model to MLflow, register it as ``challenger``, promote.

The model folder and ``metrics/eval.json`` are validated before anything is written to the
registry. With ``registry.auto_promote`` the challenger is then compared with the champion
(:func:`soraflow.registry.promote`); ``soraflow promote`` does the same by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger


@flow(name="register", log_prints=True)
def register_flow(params_path: str = "params.yaml", promote: bool | None = None) -> dict[str, Any]:
    import mlflow

    from soraflow.config import load_params
    from soraflow.registry import log_and_register, read_eval_metrics, validate_model_folder
    from soraflow.registry import promote as promote_version
    from soraflow.tracking import stage_run

    logger = get_run_logger()
    params = load_params(params_path)
    cfg = params.registry
    validate_model_folder(cfg.model_dir)  # fail before opening a run
    read_eval_metrics(cfg.eval_metrics_path)
    with stage_run("register", params, params_path=params_path):
        mv = log_and_register(cfg)
        logger.info("registered %s version %s (%s) as challenger", mv.name, mv.version, mv.model_uri)
        out: dict[str, Any] = {"model_name": mv.name, "version": mv.version, "run_id": mv.run_id, "model_uri": mv.model_uri}
        if cfg.auto_promote if promote is None else promote:
            result = promote_version(cfg, mv.version)
            logger.info("promotion: %s", result.decision.reason)
            mlflow.set_tags({"soraflow.promotion.promoted": str(result.decision.promote).lower(),
                             "soraflow.promotion.reason": result.decision.reason[:5000]})
            mlflow.log_dict(result.to_dict(), "promotion.json")
            out["promotion"] = result.to_dict()
    return out


@flow(name="promote", log_prints=True)
def promote_flow(params_path: str = "params.yaml", rollback: bool = False, version: str | None = None) -> dict[str, Any]:
    """Compare the challenger with the champion (or roll back); the decision is logged."""
    from soraflow.config import load_params
    from soraflow.registry import promote, rollback as rollback_champion

    logger = get_run_logger()
    cfg = load_params(params_path).registry
    result = rollback_champion(cfg) if rollback else promote(cfg, version)
    logger.info("%s: %s", result.action, result.decision.reason)
    return result.to_dict()


if __name__ == "__main__":
    from soraflow.cli import run_as_command

    run_as_command("register")
