"""Still frames sampled from curated clips: the demo VAE's training and validation data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from soraflow.buckets.dataset import read_image, read_video_frames


def sample_clip_frames(
    clips: pd.DataFrame, per_clip: int = 4, *, progress: bool = True, desc: str = "frames"
) -> list[np.ndarray]:
    """``per_clip`` evenly spaced frames (``[h, w, 3]`` uint8) of every clip in the table."""
    frames: list[np.ndarray] = []
    for rec in tqdm(clips.to_dict("records"), desc=desc, disable=not progress, mininterval=1.0):
        path = Path(rec["path"])
        if int(rec["num_frames"]) <= 1 or path.suffix.lower() in {".png", ".jpg", ".jpeg"}:
            frames.extend(read_image(path))
            continue
        n = int(rec["num_frames"])
        idx = np.unique(np.linspace(0, n - 1, num=min(per_clip, n)).round().astype(np.int64))
        frames.extend(read_video_frames(path, idx))
    return frames
