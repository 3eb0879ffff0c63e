"""Bad and odd input never stops curation: every input ends up in clips.parquet or rejected.parquet."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from curation_media import cut_video, scene_frames, write_png, write_video

from soraflow.curation.config import CurateConfig
from soraflow.curation.inputs import dedupe_sources, discover_inputs
from soraflow.curation.pipeline import curate_source
from soraflow.curation.probe import ProbeError, probe_media
from soraflow.curation.tables import assemble_tables


def _mkv(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """Matroska has no frame count in its header: the count must come from the packets."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i, rgb in enumerate(frames):
            fr = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            fr.pts = i
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A folder of broken/odd files and a manifest captioning all of them."""
    root = tmp_path_factory.mktemp("bad")
    src = root / "in"
    src.mkdir()
    expect: dict[str, str] = {}  # file -> "kept" | "rejected" | "either"

    (src / "zero.mp4").write_bytes(b"")
    expect["zero.mp4"] = "rejected"
    (src / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    expect["garbage.mp4"] = "rejected"
    (src / "notes.txt").write_text("this is not a video\n" * 20)
    expect["notes.txt"] = "rejected"

    good = src / "good.mp4"
    cut_video(good, [30, 30])
    expect["good.mp4"] = "kept"
    data = good.read_bytes()
    (src / "truncated_moov.mp4").write_bytes(data[: len(data) // 2])  # moov atom at the end: lost
    expect["truncated_moov.mp4"] = "rejected"
    fast = write_video(root / "fast.mp4", scene_frames(48, 128, 96, 1), faststart=True)
    fdata = fast.read_bytes()
    (src / "truncated_tail.mp4").write_bytes(fdata[: int(len(fdata) * 0.6)])  # header kept, data cut
    expect["truncated_tail.mp4"] = "either"

    png = write_png(root / "still.png")
    shutil.copy(png, src / "renamed_image.mp4")  # a PNG with a video extension
    expect["renamed_image.mp4"] = "kept"
    write_video(src / "one_frame.mp4", scene_frames(1, 128, 96, 0))
    expect["one_frame.mp4"] = "rejected"
    write_video(src / "tiny16.mp4", scene_frames(24, 16, 16, 0))
    expect["tiny16.mp4"] = "rejected"
    write_video(src / "wide1024x32.mp4", scene_frames(24, 1024, 32, 0))
    expect["wide1024x32.mp4"] = "rejected"
    pts = np.cumsum([0] + [30 if i % 3 else 75 for i in range(35)])
    write_video(src / "vfr.mp4", scene_frames(36, 128, 96, 3), pts_ms=pts)
    expect["vfr.mp4"] = "kept"
    write_video(src / "rotated.mp4", scene_frames(30, 128, 96, 4), rotation=90)
    expect["rotated.mp4"] = "kept"
    _mkv(src / "noheader.mkv", scene_frames(30, 128, 96, 2))
    expect["noheader.mkv"] = "kept"
    shutil.copy(good, src / "zz_duplicate.mp4")
    expect["zz_duplicate.mp4"] = "rejected"

    rows = [{"path": str(src / name), "text": f"caption of {name}"} for name in sorted(expect)]
    rows.append({"path": str(src / "missing.mp4"), "text": "a file that is not there"})
    expect["missing.mp4"] = "rejected"
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root, expect


def _config(root: Path) -> CurateConfig:
    cfg = CurateConfig(input=str(root / "manifest.csv"), output=str(root / "out"))
    # This test is about robustness, not thresholds: only the size/length rules filter.
    return cfg.model_copy(update={"filters": cfg.filters.model_copy(update={"motion_min": None, "ocr_boxes_max": None})})


def test_probe_reasons_are_readable(bad_corpus):
    root, _ = bad_corpus
    src = root / "in"
    with pytest.raises(ProbeError, match="empty file"):
        probe_media(src / "zero.mp4")
    with pytest.raises(ProbeError, match="not a readable media file"):
        probe_media(src / "notes.txt")
    info = probe_media(src / "renamed_image.mp4")
    assert info.kind == "image" and info.num_frames == 1
    rot = probe_media(src / "rotated.mp4")
    assert rot.rotation == 90 and (rot.width, rot.height) == (128, 96)
    mkv = probe_media(src / "noheader.mkv")
    assert not mkv.frames_from_header and mkv.num_frames == 30
    vfr = probe_media(src / "vfr.mp4")
    assert 20 < vfr.fps < 30


def test_every_bad_input_lands_in_one_table(bad_corpus):
    root, expect = bad_corpus
    cfg = _config(root)
    items = discover_inputs(cfg.input)
    sources, problems = dedupe_sources(items)
    outcomes = [curate_source(item, sha, cfg, root / "out" / ".work") for item, sha in sources]
    tables = assemble_tables(outcomes, problems, cfg.output, cfg.heldout_fraction)
    kept = {Path(p).name for p in tables.clips["source_path"]}
    rejected = tables.rejected
    assert rejected["reason"].str.len().min() > 3  # every rejection says why
    for name, fate in expect.items():
        whole_file_rejected = bool(((rejected["source_path"].map(lambda p: Path(p).name) == name)
                                    & rejected["start_frame"].isna()).any())
        any_row = name in kept or name in set(rejected["source_path"].map(lambda p: Path(p).name))
        assert any_row, f"{name} is in neither table"
        if fate == "kept":
            assert name in kept, f"{name} was not kept: {rejected[rejected.source_path.str.endswith(name)].reason.tolist()}"
        if fate == "rejected":
            assert name not in kept, f"{name} should have been rejected"
        if whole_file_rejected:
            assert name not in kept

    def reason(name: str) -> str:
        return " | ".join(rejected[rejected["source_path"].str.endswith(name)]["reason"])

    assert "empty file" in reason("zero.mp4")
    assert "same content as" in reason("zz_duplicate.mp4")
    assert "cannot read file" in reason("missing.mp4")
    assert "scene of 1 frames" in reason("one_frame.mp4")
    assert "shorter side 16" in reason("tiny16.mp4")
    assert "shorter side 32" in reason("wide1024x32.mp4")
    assert set(rejected[rejected.source_path.str.endswith("garbage.mp4")]["stage"]) == {"probe"}

    clips = tables.clips.set_index(tables.clips["source_path"].map(lambda p: Path(p).name))
    # Rotation is applied: the 128x96 frames are displayed (and written) 96 wide, 128 high.
    assert (int(clips.loc["rotated.mp4", "width"]), int(clips.loc["rotated.mp4", "height"])) == (96, 128)
    # Variable frame rate: all 36 frames kept, written at the average rate.
    assert int(clips.loc["vfr.mp4", "num_frames"]) == 36
    assert clips.loc["renamed_image.mp4", "kind"] == "image"
    assert clips.loc["renamed_image.mp4", "path"].endswith(".png")
    assert int(clips.loc["noheader.mkv", "num_frames"]) == 30
    # The good video's two scenes are two clips with their manifest caption.
    good = tables.clips[tables.clips["source_path"].str.endswith("good.mp4")]
    assert good[["start_frame", "end_frame"]].values.tolist() == [[0, 30], [30, 60]]
    assert set(good["text"]) == {"caption of good.mp4"}
    for p in tables.clips["path"]:
        assert Path(p).is_file()
    # The clip files decode to the frame counts the table claims.
    for row in tables.clips[tables.clips["kind"] == "video"].itertuples():
        with av.open(row.path) as c:
            assert sum(1 for _ in c.decode(video=0)) == row.num_frames
            assert c.streams.video[0].codec_context.name == "h264"


def test_a_variable_rate_scene_is_truncated_by_its_timestamps(tmp_path):
    """clips.max_seconds follows the frames' timestamps, not a frame count at the header's
    average rate. Here 100 frames 40 ms apart, then 12 one second apart (about 7 frames/s on
    average): a count of max_seconds x 7 frames would end the clip 2.8 s into the source,
    where 10 s were asked for (the same holds the other way for AVIs with dropped frames,
    whose header rate is above the frames': their clips ran past max_seconds)."""
    src = tmp_path / "in"
    src.mkdir()
    pts = [40 * i for i in range(100)] + [4000 + 1000 * i for i in range(12)]
    write_video(src / "burst.mp4", scene_frames(len(pts), 128, 96, 2, moving=False), pts_ms=pts)
    pd.DataFrame({"path": [str(src / "burst.mp4")], "text": ["a red square, still"]}).to_csv(tmp_path / "manifest.csv", index=False)
    cfg = _config(tmp_path)
    cfg = cfg.model_copy(update={"clips": cfg.clips.model_copy(update={"min_seconds": 1.0, "max_seconds": 10.0})})
    header_fps = probe_media(src / "burst.mp4").fps
    assert 6.0 < header_fps < 8.0

    (item, sha), = dedupe_sources(discover_inputs(cfg.input))[0]
    tables = assemble_tables([curate_source(item, sha, cfg, tmp_path / "out" / ".work")], [], cfg.output, cfg.heldout_fraction)
    assert len(tables.clips) == 1, tables.rejected[["stage", "reason"]].to_string()
    clip = tables.clips.iloc[0]
    # frames starting at most one header period before 10 s: the 100 dense ones and those at 4 ... 9 s
    assert int(clip["num_frames"]) == 106 and int(clip["end_frame"]) == 106
    seconds = clip["num_frames"] / clip["fps"]
    assert 8.5 < seconds <= 10.0
    with av.open(str(Path(cfg.output) / clip["path"])) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 106
