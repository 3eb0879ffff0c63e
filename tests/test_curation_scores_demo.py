"""Scores against the demo corpus ground truth: static vs moving, text vs clean.

The thresholds are the defaults recommended for ``curate.filters`` (motion_min 0.05,
ocr_boxes_max 0); this checks the scores separate the classes with them.
"""

from __future__ import annotations

import av
import numpy as np
import pandas as pd
import pytest

from soraflow.curation.scores import ScoresConfig, load_scorers, sample_indices, score_clip

MOTION_MIN = 0.05


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> pd.DataFrame:
    from soraflow.demo.config import DemoConfig
    from soraflow.demo.generator import generate_corpus

    out = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(
        seed=7, num_videos=8, num_images=0, static_fraction=0.35, text_fraction=0.35, max_seconds=3.0, workers=1
    )
    generate_corpus(cfg, out, progress=False)
    scenes = pd.read_parquet(out / "scenes.parquet")
    videos = pd.read_parquet(out / "videos.parquet")
    scfg = ScoresConfig()
    scorers = load_scorers(scfg)
    rows = []
    for vid in videos[videos.kind == "video"].itertuples():
        with av.open(str(out / vid.path)) as c:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        for sc in scenes[scenes.path == vid.path].itertuples():
            clip = frames[sc.start_frame : sc.end_frame]
            idx = sample_indices(len(clip), vid.fps, scfg)
            row = score_clip(clip[idx], idx, vid.fps, sc.caption, scorers, scfg)
            rows.append({"static": sc.static, "has_text": sc.has_text, "pan": sc.camera_pan, **row})
    return pd.DataFrame(rows)


def test_motion_separates_static_from_moving_scenes(scored):
    assert scored.static.sum() >= 2 and (~scored.static).sum() >= 2
    assert (scored[scored.static].motion < MOTION_MIN).all()
    assert (scored[~scored.static].motion >= MOTION_MIN).all()
    assert (scored[scored.static].camera_motion == "static").all()


def test_ocr_separates_text_from_clean_scenes(scored):
    assert scored.has_text.sum() >= 2 and (~scored.has_text).sum() >= 2
    assert (scored[scored.has_text].ocr_boxes >= 1).all()
    assert (scored[~scored.has_text].ocr_boxes == 0).all()
