"""``soraflow evaluate`` and ``soraflow eval-classifier``: run the flows in ``flows/evaluate.py``."""

from __future__ import annotations

from pathlib import Path

import typer

PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="The params.yaml to read.")


def evaluate_command(
    params: Path = PARAMS,
    model: str = typer.Option(
        None, "--model", "-m",
        help="Model to evaluate: a local model folder or an MLflow URI such as models:/soraflow-stdit@champion "
        "(default: eval.model, else sample.model).",
    ),
) -> None:
    """Stage evaluate: held-out loss, FID/KID, prompt following, temporal and image-to-video metrics."""
    from flows.evaluate import evaluate_flow

    evaluate_flow(params_path=str(params), model=model)


def eval_classifier_command(params: Path = PARAMS) -> None:
    """Stage eval_classifier: train the in-domain attribute classifier (colour, shape, direction) used by evaluate."""
    from flows.evaluate import eval_classifier_flow

    eval_classifier_flow(params_path=str(params))
