"""The train stage's views of its step log: the MLflow loss figure and the CSV files that
``dvc plots`` draws."""

from __future__ import annotations

import csv

import matplotlib.pyplot as plt

from soraflow.training.figures import loss_curve_figure
from soraflow.training.metrics import write_curves


def history() -> dict[int, dict[str, float]]:
    out = {}
    for step in range(1, 7):
        m = {"loss": 1.0 / step, "lr": 1e-3, "grad_norm": 0.5 + step, "epoch": 0.0}
        m.update({f"loss_by_t/q{q}": q / step for q in range(1, 5)})
        if step % 3 == 0:
            m.update({"prompt/color_accuracy": 0.1 * step, "prompt/shape_accuracy": 0.05 * step,
                      "prompt/direction_accuracy": 0.02 * step, "prompt/seconds": 9.0})
        out[step] = m
    return out


def test_loss_figure_draws_the_loss_and_every_timestep_quarter():
    fig = loss_curve_figure(history())
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert sorted(lines) == ["loss", "loss_by_t/q1", "loss_by_t/q2", "loss_by_t/q3", "loss_by_t/q4"]
    assert list(lines["loss_by_t/q3"].get_xdata()) == [1, 2, 3, 4, 5, 6]
    assert list(lines["loss_by_t/q3"].get_ydata()) == [3 / s for s in range(1, 7)]
    plt.close(fig)


def read(path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_curves_hold_every_logged_step_and_the_prompt_checks_where_measured(tmp_path):
    loss, prompts = write_curves(history(), tmp_path / "metrics")
    rows = read(loss)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [float(r["loss"]) for r in rows] == [1.0 / s for s in range(1, 7)]  # full precision
    assert list(rows[0]) == ["step", "loss", "lr", "grad_norm"]
    rows = read(prompts)
    assert [(int(r["step"]), float(r["direction_accuracy"])) for r in rows] == [(3, 0.06), (6, 0.12)]
    assert list(rows[0]) == ["step", "color_accuracy", "shape_accuracy", "direction_accuracy"]


def test_a_run_without_prompt_checks_writes_the_header_only(tmp_path):
    plain = {s: {k: v for k, v in m.items() if not k.startswith("prompt/")} for s, m in history().items()}
    _, prompts = write_curves(plain, tmp_path)
    assert prompts.read_text().splitlines() == ["step,color_accuracy,shape_accuracy,direction_accuracy"]
