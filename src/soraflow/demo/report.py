"""Summaries of a generated demo corpus for MLflow: counts and a contact sheet."""

from __future__ import annotations

from pathlib import Path

import av
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402


def corpus_summary_metrics(corpus: Path) -> dict[str, float]:
    """Counts and fractions read back from the corpus manifests (not from the generator)."""
    videos = pd.read_parquet(corpus / "videos.parquet")
    scenes = pd.read_parquet(corpus / "scenes.parquet")
    sizes = sum(f.stat().st_size for f in (corpus / "raw").iterdir() if f.is_file())
    is_video = videos["kind"] == "video"
    # Fractions describe video scenes; still images are one-frame "scenes" and would skew them.
    scenes = scenes[scenes["path"].isin(videos.loc[is_video, "path"])]
    return {
        "videos": float(is_video.sum()),
        "images": float((~is_video).sum()),
        "scenes": float(len(scenes)),
        "static_fraction": float(scenes["static"].mean()),
        "text_fraction": float(scenes["has_text"].mean()),
        "pan_fraction": float((scenes["camera_pan"] != "none").mean()),
        "corpus_mb": sizes / 1e6,
        "total_seconds": float((videos.loc[is_video, "num_frames"] / videos.loc[is_video, "fps"]).sum()),
    }


def _first_frame(path: Path) -> np.ndarray:
    if path.suffix.lower() in {".png", ".jpg", ".jpeg"}:
        return np.asarray(Image.open(path).convert("RGB"))
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            return frame.to_ndarray(format="rgb24")
    raise ValueError(f"{path}: no frames")


def corpus_contact_sheet(corpus: Path, max_items: int = 16):
    """A grid of first frames with their captions, for a quick look in the MLflow UI."""
    scenes = pd.read_parquet(corpus / "scenes.parquet")
    first = scenes[scenes["scene_index"] == 0].head(max_items)
    cols = 4
    rows = max(1, int(np.ceil(len(first) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.2, rows * 2.6))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, (_, row) in zip(np.atleast_1d(axes).ravel(), first.iterrows()):
        ax.imshow(_first_frame(corpus / row["path"]))
        ax.set_title(row["caption"][:48], fontsize=7)
    fig.tight_layout()
    return fig
