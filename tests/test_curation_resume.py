"""A curation run killed half way and started again redoes only unfinished files, same tables."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
from curation_media import cut_video

from soraflow.curation.config import CurateConfig
from soraflow.curation.inputs import SourceItem, dedupe_sources, discover_inputs
from soraflow.curation.pipeline import clean_stale_tmp, curate_source, source_key
from soraflow.curation.tables import assemble_tables


def _run(cfg: CurateConfig):
    sources, problems = dedupe_sources(discover_inputs(cfg.input))
    work = Path(cfg.output) / ".work"
    clean_stale_tmp(work)
    outcomes = [curate_source(item, sha, cfg, work) for item, sha in sources]
    return outcomes, assemble_tables(outcomes, problems, cfg.output, cfg.heldout_fraction)


def test_resume_redoes_only_unfinished_and_gives_same_tables(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i, lengths in enumerate([[24, 20], [30], [16, 16, 20]]):
        cut_video(src / f"v{i}.mp4", lengths, width=96 + 32 * i, height=96)
    cfg = CurateConfig(input=str(src), output=str(tmp_path / "out"))
    cfg = cfg.model_copy(update={"filters": cfg.filters.model_copy(update={"motion_min": None, "ocr_boxes_max": None})})

    first, tables1 = _run(cfg)
    assert not any(o.cached for o in first)
    assert len(tables1.clips) == 6
    clips1 = pd.read_parquet(tmp_path / "out" / "clips.parquet")
    rejected1 = pd.read_parquet(tmp_path / "out" / "rejected.parquet")
    mtimes = {o.work_dir: os.stat(Path(o.work_dir) / "source.json").st_mtime_ns for o in first}

    # Simulate a kill: one source's result never got renamed into place (only a temp folder
    # with a partial clip exists), and the final tables were never written.
    victim = Path(first[1].work_dir)
    partial = victim.parent / f".tmp-{victim.name}-deadbeef"
    shutil.copytree(victim, partial)
    (partial / "source.json").unlink()
    shutil.rmtree(victim)
    (tmp_path / "out" / "clips.parquet").unlink()
    (tmp_path / "out" / "rejected.parquet").unlink()
    for f in (tmp_path / "out" / "clips").iterdir():
        f.unlink()

    second, _ = _run(cfg)
    assert [o.cached for o in second] == [True, False, True]
    assert not partial.exists()
    for o in second:
        if o.cached:  # finished sources were not touched
            assert os.stat(Path(o.work_dir) / "source.json").st_mtime_ns == mtimes[o.work_dir]
    clips2 = pd.read_parquet(tmp_path / "out" / "clips.parquet")
    rejected2 = pd.read_parquet(tmp_path / "out" / "rejected.parquet")
    pd.testing.assert_frame_equal(clips1, clips2)
    pd.testing.assert_frame_equal(rejected1, rejected2)
    assert all(Path(p).is_file() for p in clips2["path"])
    # Ids are stable: content hash + frame range.
    assert clips2["id"].is_unique

    # A setting that changes the result makes a new key (no stale reuse); paths do not.
    item = SourceItem(str(src / "v0.mp4"))
    sha = dedupe_sources([item])[0][0][1]
    stricter = cfg.model_copy(update={"clips": cfg.clips.model_copy(update={"min_seconds": 1.0})})
    moved = cfg.model_copy(update={"output": str(tmp_path / "elsewhere"), "workers": 7})
    assert source_key(sha, stricter, None) != source_key(sha, cfg, None)
    assert source_key(sha, moved, None) == source_key(sha, cfg, None)
