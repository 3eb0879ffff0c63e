"""Stage ``demo_data``: generate the embedded demo corpus (DVC out ``data/demo``)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task

from soraflow.config import load_params


@task(name="generate-corpus")
def generate_corpus_task(config, output: Path):
    from soraflow.demo.generator import generate_corpus

    return generate_corpus(config, output)


@flow(name="demo-data", log_prints=True)
def demo_data_flow(params_path: str = "params.yaml", output: str | None = None) -> dict:
    """Write the demo videos, stills and ground-truth manifests; log a summary to MLflow."""
    import mlflow

    from soraflow.demo.report import corpus_contact_sheet, corpus_summary_metrics
    from soraflow.tracking import stage_run

    logger = get_run_logger()
    params = load_params(params_path)
    out = Path(output or params.demo.output)
    with stage_run("demo_data", params, params_path=params_path):
        summary = generate_corpus_task(params.demo, out)
        metrics = corpus_summary_metrics(out)
        mlflow.log_metrics(metrics)
        mlflow.log_figure(corpus_contact_sheet(out), "demo_corpus_contact_sheet.png")
        logger.info("demo corpus in %s: %s", out, metrics)
    return metrics


if __name__ == "__main__":
    from soraflow.cli import run_as_command

    run_as_command("demo-data")
