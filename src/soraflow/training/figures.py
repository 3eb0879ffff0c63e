"""Figures of a training run for the MLflow UI."""

from __future__ import annotations


def loss_curve_figure(history: dict[int, dict[str, float]]):
    """The step log's loss, and the loss in each timestep quarter (``loss_by_t/q1`` = least noise),
    against the step on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(history)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [history[s].get("loss", float("nan")) for s in steps], label="loss")
    for key in sorted({k for m in history.values() for k in m if k.startswith("loss_by_t/")}):
        ax.plot(steps, [history[s].get(key, float("nan")) for s in steps], label=key, alpha=0.6)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
