"""Still frames sampled from curated clips (the demo VAE's data), decoded in threads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from soraflow.buckets.dataset import read_video_frames
from soraflow.features.frames import sample_clip_frames


def test_sample_clip_frames_are_evenly_spaced_in_table_order_whatever_the_thread_count(tmp_path) -> None:
    from evaluation_helpers import write_corpus

    table = write_corpus(tmp_path, np.random.default_rng(0), n_train=4, n_heldout=0, frames=12, size=40)
    long = write_corpus(tmp_path / "long", np.random.default_rng(1), n_train=1, n_heldout=0, frames=60, size=40)
    still = np.random.default_rng(2).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    Image.fromarray(still).save(tmp_path / "still.png")
    stills = pd.DataFrame([{"path": str(tmp_path / "still.png"), "num_frames": 1}])
    # the long clip first, so a second thread finishes the short ones before it
    clips = pd.concat([long, table, stills], ignore_index=True)
    expected = [f for n, p in zip(clips["num_frames"][:-1], clips["path"][:-1])
                for f in read_video_frames(p, np.linspace(0, n - 1, 3).round().astype(np.int64))] + [still]
    assert len(expected) == 5 * 3 + 1
    for workers in (1, 2, 3):
        got = sample_clip_frames(clips, per_clip=3, progress=False, workers=workers)
        assert len(got) == len(expected)
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True)), workers
    # a clip shorter than per_clip gives each of its frames once
    short = sample_clip_frames(table.assign(num_frames=2).iloc[:1], per_clip=4, progress=False)
    assert len(short) == 2
    with pytest.raises(Exception, match="missing.mp4"):
        sample_clip_frames(table.assign(path=[*table["path"][:-1], str(tmp_path / "missing.mp4")]), progress=False)
