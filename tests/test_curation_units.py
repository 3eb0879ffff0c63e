"""Small pieces of curation: inputs, captions, filters, split, sizes, scene cuts, config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from curation_media import cut_video

from soraflow.config import ConfigError, load_params
from soraflow.curation.captions import best_overlap, read_sidecar
from soraflow.curation.config import CurateConfig, FiltersConfig
from soraflow.curation.decode import FrameReader, detect_step, even_size
from soraflow.curation.filters import caption_rules, score_rules, shape_rules
from soraflow.curation.groundtruth import cut_scores
from soraflow.curation.inputs import discover_inputs
from soraflow.curation.probe import probe_media
from soraflow.curation.scenes import SceneCutter, scene_ranges
from soraflow.curation.tables import assign_splits, split_unit


def test_folder_discovery_skips_sidecars_and_hidden(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "a.mp4.json").write_text("{}")
    (tmp_path / "orphan.json").write_text("{}")  # not a sidecar: an input (rejected later)
    (tmp_path / "sub" / "b.png").write_bytes(b"x")
    (tmp_path / ".hidden.mp4").write_bytes(b"x")
    names = [Path(i.path).relative_to(tmp_path).as_posix() for i in discover_inputs(tmp_path)]
    assert names == ["a.mp4", "orphan.json", "sub/b.png"]


def test_manifest_paths_and_text(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"x")
    pd.DataFrame({"path": ["v.mp4", "/abs/w.mp4"], "text": ["a cat", None]}).to_parquet(tmp_path / "m.parquet")
    items = discover_inputs(tmp_path / "m.parquet")
    assert items[0].path == str(tmp_path / "v.mp4") and items[0].text == "a cat"
    assert items[1].path == "/abs/w.mp4" and items[1].text is None
    pd.DataFrame({"file": ["v.mp4"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="no 'path' column"):
        discover_inputs(tmp_path / "bad.csv")


def test_sidecar_caption_by_largest_overlap(tmp_path):
    media = tmp_path / "v.mp4"
    media.write_bytes(b"x")
    scenes = [{"start_frame": 0, "end_frame": 48, "caption": "first"}, {"start_frame": 48, "end_frame": 90, "caption": "second"}]
    (tmp_path / "v.mp4.json").write_text(json.dumps({"scenes": scenes}))
    sc = read_sidecar(media)
    assert best_overlap(sc, 0, 47) == "first"
    assert best_overlap(sc, 46, 90) == "second"  # a cut detected 2 frames early
    assert best_overlap(sc, 95, 100) is None
    (tmp_path / "v.mp4.json").write_text("not json")
    assert read_sidecar(media) == []


def test_filters_null_thresholds_and_missing_scores():
    f = FiltersConfig(motion_min=0.5, ocr_boxes_max=0, aesthetic_min=4.5, match_min=None)
    row = {"num_frames": 30, "height": 240, "width": 426}
    assert shape_rules(row, f) is None
    assert shape_rules({**row, "height": 32}, f).rule == "min_side"
    assert shape_rules({**row, "width": 2000, "height": 100}, f).rule == "min_aspect_ratio"
    res = score_rules({"motion": 0.1, "ocr_boxes": 0, "aesthetic": math.nan}, f, is_video=True)
    assert res.rejection.rule == "motion_min" and "0.1 < motion_min 0.5" in res.rejection.reason
    assert res.skipped == ["aesthetic_min"]  # the model is missing: logged, nothing rejected
    assert score_rules({"motion": math.nan, "ocr_boxes": 0, "aesthetic": 5.0}, f, is_video=False).rejection is None
    assert score_rules({"motion": 1.0, "ocr_boxes": 2, "aesthetic": 5.0}, f, True).rejection.rule == "ocr_boxes_max"
    off = FiltersConfig(motion_min=None, ocr_boxes_max=None, min_side=None, min_aspect_ratio=None)
    assert score_rules({"motion": 0.0, "ocr_boxes": 9}, off, True).rejection is None
    assert shape_rules({**row, "height": 4}, off) is None
    assert caption_rules("  ", f).rule == "empty_caption"
    assert caption_rules("x" * 2000, f).rule == "caption_max_chars"


def test_split_holds_out_the_asked_share_by_content():
    shas = [f"{i:064x}" for i in range(2000)]
    splits = assign_splits(shas, 0.15)
    assert splits == assign_splits(list(reversed(shas)) + shas[:10], 0.15)  # order and duplicates
    assert sum(v == "heldout" for v in splits.values()) == 300
    assert set(assign_splits(shas[:50], 0.0).values()) == {"train"}
    assert set(assign_splits(shas[:50], 1.0).values()) == {"heldout"}
    assert sorted(assign_splits(shas[:3], 0.15).values()) == ["heldout", "train", "train"]
    assert assign_splits(shas[:1], 0.15) == {shas[0]: "train"}
    # a new source moves at most one other across the cut
    grown = assign_splits(shas + ["f" * 64], 0.15)
    moved = [s for s in shas if grown[s] != splits[s]]
    assert len(moved) <= 1
    # the held-out ones are the lowest split units: a property of each content, not of its position
    held = sorted(s for s, v in splits.items() if v == "heldout")
    assert max(split_unit(s) for s in held) < min(split_unit(s) for s, v in splits.items() if v == "train")


def test_sizes():
    assert even_size(1920, 1080, 360) == (640, 360)
    assert even_size(1024, 32, 360) == (1024, 32)
    assert even_size(17, 17, 360) == (16, 16)
    assert even_size(1280, 720, 360) == (640, 360)
    assert detect_step(1024, 256) == 4
    assert detect_step(200, 256) == 1
    assert detect_step(300, 256) == 2
    assert scene_ranges(10, [0, 4, 4, 12]) == [(0, 4), (4, 10)]


@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_scene_cuts_within_two_frames(tmp_path, detector):
    lengths = [20, 13, 30, 12]
    truth = cut_video(tmp_path / "v.mp4", lengths, width=160, height=96)
    cfg = CurateConfig().scenes.model_copy(update={"detector": detector})
    info = probe_media(tmp_path / "v.mp4")
    cutter = SceneCutter(cfg, info.fps)
    for f in FrameReader(tmp_path / "v.mp4", (160, 96), cfg.detect_width):
        cutter.push(f.index, f.small)
    cutter.finish()
    s = cut_scores({"v": cutter.cuts}, {"v": truth}, tolerance=2)
    assert s["precision"] == 1.0 and s["recall"] == 1.0, (cutter.cuts, truth)


def test_cut_scores_matching():
    s = cut_scores({"a": [10, 31, 50]}, {"a": [10, 30, 70]}, tolerance=2)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 1, 1)


def test_config_errors_name_the_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("curate:\n  clips:\n    min_seconds: 20\n    max_seconds: 15\n")
    with pytest.raises(ConfigError, match="curate.clips"):
        load_params(p)
    p.write_text("curate:\n  task_runner: ray\n")
    with pytest.raises(ConfigError, match="curate.task_runner"):
        load_params(p)
    p.write_text("curate:\n  filters:\n    motion_mn: 1\n")
    with pytest.raises(ConfigError, match="curate.filters.motion_mn"):
        load_params(p)
    assert load_params(Path(__file__).resolve().parents[1] / "params.yaml").curate.heldout_fraction == 0.15


def test_thumbnail_strip_shape():
    from soraflow.curation.encode import thumbnail_strip

    strip = thumbnail_strip([np.zeros((90, 160, 3), np.uint8)] * 3, height=36)
    assert strip.shape == (36, 3 * 64 + 2 * 2, 3)


def test_cli_help_lists_options():
    import typer
    from typer.testing import CliRunner

    from soraflow.curation.cli import curate_command

    app = typer.Typer()
    app.command("curate")(curate_command)
    app.command("other")(lambda: None)  # two commands, so "curate" is a subcommand as in soraflow
    result = CliRunner().invoke(app, ["curate", "--help"])
    assert result.exit_code == 0
    for opt in ("--input", "--output", "--workers", "--task-runner", "--dask-address"):
        assert opt in result.output
