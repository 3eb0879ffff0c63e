"""Stages ``eval_classifier`` and ``evaluate``.

``eval_classifier`` trains the in-domain attribute classifier (colour, shape, motion direction)
on the curated training clips and writes it to ``eval.classifier.output`` with its held-out
accuracy (``metrics/eval_classifier.json``). ``evaluate`` loads the model (a folder or an MLflow
URI), generates videos for held-out prompts and measures them (see
:mod:`soraflow.evaluation.runner`), writes ``metrics/eval.json`` and the plot CSVs, and logs
metrics, confusion matrices, the held-out loss curve and a grid of samples to MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger

from soraflow.config import load_params

CLASSIFIER_METRICS = Path("metrics/eval_classifier.json")


@flow(name="eval_classifier", log_prints=True)
def eval_classifier_flow(params_path: str = "params.yaml") -> dict[str, float]:
    import mlflow

    from soraflow.evaluation import train_eval_classifier
    from soraflow.tracking import stage_run

    logger = get_run_logger()
    params = load_params(params_path)
    cfg = params.eval.classifier
    with stage_run("eval_classifier", params, params_path=params_path):
        _, report = train_eval_classifier(params)
        metrics = {
            k: float(v) for k, v in report.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # drop NaN
        }
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(cfg.output, "eval_classifier")
        CLASSIFIER_METRICS.parent.mkdir(parents=True, exist_ok=True)
        keep = {k: v for k, v in metrics.items() if k.startswith("val_") or k in ("train_clips", "val_clips", "seconds")}
        CLASSIFIER_METRICS.write_text(json.dumps(keep, indent=2, sort_keys=True) + "\n")
        logger.info(
            "attribute classifier on held-out real clips: colour %.3f, shape %.3f, direction %.3f",
            report["val_color_accuracy"], report["val_shape_accuracy"], report["val_direction_accuracy"],
        )
    return metrics


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params_path: str = "params.yaml", model: str | None = None) -> dict[str, float]:
    import mlflow

    from soraflow.evaluation import evaluate_model, train_eval_classifier, write_outputs
    from soraflow.evaluation.classifier import load_classifier
    from soraflow.evaluation.plots import confusion_figure, loss_by_timestep_figure, sample_grid_figure
    from soraflow.sampling import VideoGenerator
    from soraflow.tracking import stage_run

    logger = get_run_logger()
    params = load_params(params_path)
    cfg = params.eval
    uri = model or cfg.model or params.sample.model
    use_ema = cfg.use_ema if cfg.use_ema is not None else params.sample.use_ema
    precision = cfg.mixed_precision or params.sample.mixed_precision
    device = None if cfg.device == "auto" else cfg.device
    with stage_run("evaluate", params, params_path=params_path, tags={"soraflow.model_uri": str(uri)}):
        try:
            classifier = load_classifier(cfg.classifier.output)
        except FileNotFoundError:
            logger.warning("no attribute classifier at %s: training it now (the eval_classifier stage)", cfg.classifier.output)
            classifier, _ = train_eval_classifier(params)
        generator = VideoGenerator.from_uri(
            uri, device=device, use_ema=use_ema, buckets=params.buckets, mixed_precision=precision
        )
        report = evaluate_model(params, generator, classifier=classifier)
        paths = write_outputs(report, cfg)
        metrics = report.finite_metrics()
        mlflow.log_metrics(metrics)
        for path in paths:
            mlflow.log_artifact(str(path), "eval")
        if report.notes:
            mlflow.log_text("\n".join(report.notes) + "\n", "eval/notes.txt")
        if report.classifier_report:
            mlflow.log_dict(report.classifier_report, "eval/classifier_report.json")
        if report.predictions is not None:
            mlflow.log_figure(
                confusion_figure({a: report.confusion(a) for a in ("color", "shape", "direction")}),
                "eval/confusion.png",
            )
            table = report.predictions.drop(columns=["clip_index"], errors="ignore")
            mlflow.log_table(table, "eval/predictions.json")
            n = min(cfg.grid_samples, len(report.videos))
            titles = [
                f"{r.prompt}\npred: {r.pred_color} {r.pred_shape} {r.pred_direction}"
                for r in report.predictions.head(n).itertuples()
            ]
            mlflow.log_figure(sample_grid_figure(report.videos[:n], titles), "eval/samples.png")
        if report.loss is not None:
            mlflow.log_figure(loss_by_timestep_figure(report.loss.by_timestep(), report.loss.table), "eval/heldout_loss.png")
            for row in report.loss.by_timestep().itertuples():
                mlflow.log_metric("heldout_loss_by_timestep", float(row.loss), step=int(round(row.timestep)))
        if report.i2v is not None:
            mlflow.log_table(report.i2v, "eval/i2v.json")
        summary = ", ".join(
            f"{k} {metrics[k]:.3f}" for k in ("color_accuracy", "shape_accuracy", "direction_accuracy", "fid", "fid_real_halves",
                                              "heldout_loss", "i2v_first_frame_psnr", "i2v_color_kept") if k in metrics
        )
        logger.info("evaluation of %s: %s", uri, summary)
    return metrics


if __name__ == "__main__":
    from soraflow.cli import run_as_command

    run_as_command("evaluate")
