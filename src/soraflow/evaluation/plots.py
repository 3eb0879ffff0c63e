"""Figures of the evaluation (matplotlib, Agg): confusion matrices, loss by timestep, sample grid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["confusion_figure", "loss_by_timestep_figure", "sample_grid_figure"]


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


def loss_by_timestep_figure(by_timestep: pd.DataFrame, by_bucket_table: pd.DataFrame | None = None):
    """Held-out loss against the timestep (overall, and per bucket when given the long table)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(by_timestep["timestep"], by_timestep["loss"], marker="o", label="all buckets")
    if by_bucket_table is not None and by_bucket_table["bucket"].nunique() > 1:
        for name, g in by_bucket_table.groupby("bucket"):
            ax.plot(g["timestep"], g["loss"], alpha=0.5, label=name.replace("heldout_loss_", ""))
    ax.set_xlabel("timestep")
    ax.set_ylabel("held-out loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def sample_grid_figure(videos: np.ndarray, titles: Sequence[str], max_frames: int = 8):
    """One row per video (frames left to right), its title above (prompt and predicted labels)."""
    plt = _plt()
    n = len(videos)
    t = min(max_frames, videos.shape[1])
    idx = np.linspace(0, videos.shape[1] - 1, t).round().astype(int)
    fig, axes = plt.subplots(n, t, figsize=(1.1 * t, 1.45 * n), squeeze=False)
    for r in range(n):
        for c, fi in enumerate(idx):
            ax = axes[r][c]
            ax.imshow(videos[r, fi], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_title(titles[r], fontsize=6, loc="left")
    fig.tight_layout(h_pad=0.6, w_pad=0.1)
    return fig
