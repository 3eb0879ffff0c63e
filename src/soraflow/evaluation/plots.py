"""Figures of the evaluation (matplotlib, Agg): confusion matrices, loss by timestep, sample grid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["confusion_figure", "loss_by_timestep_figure", "log_lines_figure", "sample_grid_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(tables: dict[str, pd.DataFrame], title: str = "prompt following (rows: prompt, columns: classifier)"):
    """One heat map per attribute from :func:`soraflow.evaluation.metrics.confusion_table` tables."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 4.0), squeeze=False)
    for ax, (name, table) in zip(axes[0], tables.items()):
        values = table.to_numpy()
        ax.imshow(values, cmap="Blues")
        ax.set_xticks(range(len(table.columns)), table.columns, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(table.index)), table.index, fontsize=8)
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                if values[i, j]:
                    ax.text(j, i, str(values[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if values[i, j] > values.max() / 2 else "black")
        total = values.sum()
        acc = np.trace(values) / total if total else float("nan")
        ax.set_title(f"{name}: {acc:.0%} of {total}", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("prompt", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def log_lines_figure(lines: Sequence[tuple[Sequence[float], Sequence[float], str, dict]], xlabel: str, ylabel: str):
    """Curves ``(x, y, label, plot kwargs)`` on one axis with a log-scale y (loss curves)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for x, y, label, style in lines:
        ax.plot(x, y, label=label, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def loss_by_timestep_figure(by_timestep: pd.DataFrame, by_bucket_table: pd.DataFrame | None = None):
    """Held-out loss against the timestep (overall, and per bucket when given the long table)."""
    lines = [(by_timestep["timestep"], by_timestep["loss"], "all buckets", {"marker": "o"})]
    if by_bucket_table is not None and by_bucket_table["bucket"].nunique() > 1:
        for name, g in by_bucket_table.groupby("bucket"):
            lines.append((g["timestep"], g["loss"], name.replace("heldout_loss_", ""), {"alpha": 0.5}))
    return log_lines_figure(lines, "timestep", "held-out loss")


def sample_grid_figure(videos: np.ndarray, titles: Sequence[str], max_frames: int = 8, scale: int = 4):
    """One row per video (its frames side by side, enlarged), its title above (prompt and
    predicted labels)."""
    plt = _plt()
    n, t_all, h, w = videos.shape[:4]
    t = min(max_frames, t_all)
    idx = np.linspace(0, t_all - 1, t).round().astype(int)
    gap = np.full((h, 2, 3), 255, np.uint8)
    rows = []
    for v in videos:
        parts = []
        for k, fi in enumerate(idx):
            parts += [v[fi]] + ([gap] if k + 1 < t else [])
        rows.append(np.concatenate(parts, axis=1).repeat(scale, axis=0).repeat(scale, axis=1))
    row_w, row_h = rows[0].shape[1], rows[0].shape[0]
    fig_w = max(4.0, row_w / 120)
    fig, axes = plt.subplots(n, 1, figsize=(fig_w, n * (row_h / 120 + 0.45)), squeeze=False)
    for ax, row, title in zip(axes[:, 0], rows, titles):
        ax.imshow(row, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(title, fontsize=7, loc="left")
    fig.tight_layout(h_pad=0.4)
    return fig
