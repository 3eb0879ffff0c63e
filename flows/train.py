"""Stage ``train``: launch the torchrun workers (DDP/FSDP2) and track the run in MLflow.

The flow builds the worker command from params (``train.nproc_per_node``, ``train.nnodes``,
rendezvous endpoint), streams the workers' logs into the Prefect log, turns rank 0's metric
lines into MLflow metrics as they arrive, and logs the final model folder (config JSON +
safetensors + the frozen encoders' references) as the run's ``model`` artifact.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def encoder_references(params) -> dict[str, Any]:
    """What a sampler needs besides the STDiT2 weights: the frozen encoders it was trained with."""
    return {
        "vae": params.vae.source,
        "vae_scaling_factor": params.vae.scaling_factor,
        "text_encoder": params.text_encoder.pretrained,
        "text_max_length": params.text_encoder.max_length,
        "text_hidden_layer": params.text_encoder.hidden_layer,
        "frame_interval": params.buckets.frame_interval,
        "diffusion": params.diffusion.model_dump(mode="json"),
    }


def log_checkpoints(output: Path, max_mb: float) -> dict[str, Any]:
    """Record the kept checkpoints in the MLflow run: ``checkpoints.json`` lists every one with
    its path and size; the newest is also uploaded under ``checkpoints/`` when it is at most
    ``max_mb`` (larger ones stay on disk / in DVC, referenced by path)."""
    import mlflow

    from soraflow.training.checkpoint import checkpoint_step, list_checkpoints

    found = list_checkpoints(output)
    rows = []
    for ckpt in found:
        size = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
        rows.append({"step": checkpoint_step(ckpt), "path": str(ckpt.resolve()), "mb": round(size / 2**20, 2)})
    uploaded = None
    if rows and rows[-1]["mb"] <= max_mb:
        mlflow.log_artifacts(str(found[-1]), f"checkpoints/{found[-1].name}")
        uploaded = found[-1].name
    index = {"checkpoints": rows, "uploaded": uploaded, "max_mb": max_mb}
    mlflow.log_dict(index, "checkpoints.json")
    return index


@flow(name="train", log_prints=True)
def train_flow(
    params_path: str = "params.yaml",
    steps: int | None = None,
    ckpt_every: int | None = None,
    nproc_per_node: int | None = None,
    seed: int | None = None,
    output: str | None = None,
    resume: str | None = None,
    builder: str = "default",
    builder_opts: list[str] | None = None,
) -> dict[str, float]:
    import mlflow

    from soraflow.tracking import stage_run
    from soraflow.training.cli import worker_args
    from soraflow.training.launch import launch_torchrun
    from soraflow.training.figures import loss_curve_figure
    from soraflow.training.metrics import is_run_measurement, read_metrics_file, write_curves
    from soraflow.training.worker import load_params_with_overrides

    logger = get_run_logger()
    options = {"steps": steps, "ckpt_every": ckpt_every, "nproc_per_node": nproc_per_node, "seed": seed,
               "output": output, "resume": resume}
    overrides = {f"train.{k}": v for k, v in options.items() if v is not None}
    params = load_params_with_overrides(params_path, overrides)  # fails early, naming the bad key
    cfg = params.train
    args = worker_args(
        Path(params_path), builder=builder, steps=steps, ckpt_every=ckpt_every, seed=seed, output=output,
        resume=resume, overrides={"train.nproc_per_node": cfg.nproc_per_node}, builder_opts=builder_opts,
    )
    out = Path(cfg.output)
    with stage_run("train", params, params_path=params_path, log_system_metrics=True):
        mlflow.set_tags({"soraflow.world_size": str(cfg.nproc_per_node * cfg.nnodes), "soraflow.builder": builder})
        latest: dict[str, float] = {}  # the speed figures stay out of metrics.jsonl: keep the last ones seen

        def on_metrics(step: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics(_finite(metrics), step=step)
            latest.update({k: v for k, v in metrics.items() if is_run_measurement(k)})

        launch_torchrun(cfg, args, logger, on_metrics=on_metrics)
        history = read_metrics_file(out / "metrics.jsonl")
        final = out / "final"
        (final / "encoders.json").write_text(json.dumps(encoder_references(params), indent=2))
        mlflow.log_artifacts(str(final), "model")
        log_checkpoints(out, max_mb=cfg.checkpoint_artifact_max_mb)
        if history:
            mlflow.log_figure(loss_curve_figure(history), "loss_curve.png")
        last = history[max(history)] if history else {}
        summary = {"final_step": float(max(history) if history else 0), **_finite(last), **_finite(latest)}
        write_curves(history, "metrics")
        keep = ("final_step", "loss", "samples_per_s", "tokens_per_s", "data_wait_frac")
        Path("metrics/train.json").write_text(
            json.dumps({k: summary[k] for k in keep if k in summary}, indent=2, sort_keys=True)
        )
        logger.info("trained to step %d; final model in %s", int(summary["final_step"]), final)
    return summary


if __name__ == "__main__":
    from soraflow.cli import run_as_command

    run_as_command("train")
