"""Stage ``sample``: render the fixed prompt set of params with the trained model, log to MLflow.

Every prompt becomes an mp4 + GIF under ``sample.output`` (plus ``samples.json`` and a
captioned ``grid.gif``); the files are logged to the stage's MLflow run under ``samples/``,
so runs of the pipeline compare side by side in the MLflow UI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE


@task(name="render-samples", cache_policy=NONE)
def render_task(cfg_json: dict[str, Any], params_path: str, reference: list[str] | None, mask_strategy: str | None,
                loops: int, any_size: bool) -> dict[str, Any]:
    from soraflow.sampling.config import SampleConfig
    from soraflow.sampling.render import load_sample_settings, render_from_config

    cfg = SampleConfig.model_validate(cfg_json)
    _, buckets = load_sample_settings(params_path)
    return render_from_config(cfg, None if any_size else buckets, reference=reference, mask_strategy=mask_strategy, loops=loops)


@flow(name="sample", log_prints=True)
def sample_flow(
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    reference: list[str] | None = None,
    mask_strategy: str | None = None,
    loops: int = 1,
    any_size: bool = False,
) -> dict[str, Any]:
    import mlflow

    from soraflow.config import load_params
    from soraflow.sampling.render import GRID_NAME, INDEX_NAME, load_sample_settings
    from soraflow.tracking import stage_run

    logger = get_run_logger()
    params = load_params(params_path)
    cfg, _ = load_sample_settings(params_path, overrides)  # fails early, naming the bad key
    params = params.model_copy(update={"sample": cfg})
    with stage_run("sample", params, params_path=params_path):
        mlflow.set_tags({"soraflow.sample.model": cfg.model})
        index = render_task(cfg.model_dump(mode="json"), params_path, reference, mask_strategy, loops, any_size)
        out = Path(cfg.output)
        for s in index["samples"]:
            for key in ("mp4", "gif", "png"):
                if key in s:
                    mlflow.log_artifact(str(out / s[key]), "samples")
        if (out / GRID_NAME).exists():
            mlflow.log_artifact(str(out / GRID_NAME))
        mlflow.log_artifact(str(out / INDEX_NAME))
        mlflow.log_metrics({"sample_seconds": float(index["seconds"]), "num_samples": float(len(index["samples"]))})
        logger.info("%d samples from %s in %s (%.1f s)", len(index["samples"]), cfg.model, out, index["seconds"])
    return index


if __name__ == "__main__":
    from soraflow.cli import run_as_command

    run_as_command("sample")
