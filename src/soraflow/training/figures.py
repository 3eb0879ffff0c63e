"""Figures of a training run for the MLflow UI."""

from __future__ import annotations

from soraflow.evaluation.plots import log_lines_figure


def loss_curve_figure(history: dict[int, dict[str, float]]):
    """The step log's loss, and the loss in each timestep quarter (``loss_by_t/q1`` = least noise),
    against the step on a log scale."""
    steps = sorted(history)
    keys = ["loss", *sorted({k for m in history.values() for k in m if k.startswith("loss_by_t/")})]
    lines = [
        (steps, [history[s].get(key, float("nan")) for s in steps], key, {} if key == "loss" else {"alpha": 0.6})
        for key in keys
    ]
    return log_lines_figure(lines, "step", "training loss")
