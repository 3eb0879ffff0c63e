"""Figures and metrics of a curation run (the flow logs them to MLflow; nothing here logs).

- :func:`run_metrics`: counts (sources, clips, rejected rows per ``stage.rule``, split sizes);
- :func:`score_histograms`: one histogram per score, kept vs rejected clips;
- :func:`sample_grid`: a few kept and a few rejected clips, three frames each, labelled.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from soraflow.curation.tables import CurateTables, reason_counts

HIST_SCORES = ("motion", "ocr_area", "ocr_boxes", "aesthetic", "match", "num_frames")


def run_metrics(tables: CurateTables) -> dict[str, float]:
    clips, rej = tables.clips, tables.rejected
    m: dict[str, float] = {
        "sources": float(len(tables.sources)),
        "clips_kept": float(len(clips)),
        "rows_rejected": float(len(rej)),
        "clips_heldout": float((clips["split"] == "heldout").sum()) if len(clips) else 0.0,
        "clips_train": float((clips["split"] == "train").sum()) if len(clips) else 0.0,
        "kept_seconds": float((clips["num_frames"] / clips["fps"]).fillna(0).sum()) if len(clips) else 0.0,
    }
    for key, n in reason_counts(rej).items():
        m[f"rejected.{key}"] = float(n)
    return m


def score_histograms(tables: CurateTables):
    """A matplotlib figure: kept vs rejected distribution of each score that has values."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = [c for c in HIST_SCORES if _has_values(tables.clips, c) or _has_values(tables.rejected, c)]
    n = max(1, len(cols))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=False):
        kept = _values(tables.clips, col)
        rej = _values(tables.rejected, col)
        both = np.concatenate([kept, rej]) if len(kept) + len(rej) else np.zeros(1)
        bins = np.histogram_bin_edges(both, bins=20)
        ax.hist(rej, bins=bins, alpha=0.6, label=f"rejected ({len(rej)})", color="tab:red")
        ax.hist(kept, bins=bins, alpha=0.6, label=f"kept ({len(kept)})", color="tab:green")
        ax.set_title(col)
        ax.legend(fontsize=7)
    if not cols:
        axes[0][0].text(0.5, 0.5, "no scores", ha="center", va="center")
    fig.tight_layout()
    return fig


def _has_values(df: pd.DataFrame, col: str) -> bool:
    return col in df.columns and pd.to_numeric(df[col], errors="coerce").notna().any()


def _values(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.zeros(0)
    v = pd.to_numeric(df[col], errors="coerce").dropna().to_numpy(dtype=float)
    return v[np.isfinite(v)]


def sample_grid(tables: CurateTables, per_side: int = 6, seed: int = 0):
    """A figure of ``per_side`` kept and ``per_side`` rejected clips (3-frame strips, labelled)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from PIL import Image

    rng = np.random.default_rng(seed)

    def pick(df: pd.DataFrame) -> pd.DataFrame:
        df = df[df["id"].notna()] if "id" in df.columns and len(df) else df.iloc[0:0]
        df = df[[str(i) in tables.thumbs for i in df["id"]]] if len(df) else df
        if len(df) > per_side:
            df = df.iloc[np.sort(rng.choice(len(df), per_side, replace=False))]
        return df

    kept, rej = pick(tables.clips), pick(tables.rejected)
    rows = max(len(kept), len(rej), 1)
    fig, axes = plt.subplots(rows, 2, figsize=(9, 1.45 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    fig.text(0.25, 0.995, f"kept ({len(tables.clips)} clips)", ha="center", va="top", fontsize=11, color="tab:green")
    fig.text(0.75, 0.995, f"rejected ({len(tables.rejected)} rows)", ha="center", va="top", fontsize=11, color="tab:red")
    for col, df in ((0, kept), (1, rej)):
        for r, row in enumerate(df.itertuples(index=False)):
            ax = axes[r][col]
            ax.imshow(np.asarray(Image.open(tables.thumbs[str(row.id)]).convert("RGB")))
            label = f"{Path(str(row.source_path)).name} [{row.start_frame}:{row.end_frame}]"
            motion = getattr(row, "motion", math.nan)
            if motion is not None and not pd.isna(motion):
                label += f" motion {float(motion):.2f}"
            if col == 1:
                label += f"\n{row.rule}: {str(row.reason)[:60]}"
            else:
                label += f"\n{str(row.text)[:60]}"
            ax.set_title(label, fontsize=6.5, loc="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return fig
