"""End to end: generate a small demo corpus, decode every file, check it against the manifest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from soraflow.demo import vocab
from soraflow.demo.config import DemoConfig
from soraflow.demo.generator import generate_corpus
from soraflow.demo.render import object_center, object_pixel_size, render_scene_frames, text_box
from soraflow.demo.spec import MediaSpec, plan_corpus
from soraflow.demo.writer import write_media
from soraflow.x264 import libx264_options

# Small, but with enough static/text/pan scenes to check each of them.
SMALL = DemoConfig(
    num_videos=6,
    num_images=2,
    static_fraction=0.25,
    text_fraction=0.3,
    pan_fraction=0.5,
    short_sides=[144, 240],
    max_seconds=4.0,
    workers=2,
)
CUT_THRESHOLD = 20.0  # mean |frame[t] - frame[t-1]| over pixels and channels, 0..255

VIDEO_COLUMNS = {"path", "kind", "width", "height", "fps", "num_frames", "cut_frames"}
SCENE_COLUMNS = {
    "path", "scene_index", "start_frame", "end_frame", "shape", "color", "background", "background_color",
    "direction", "speed", "camera_pan", "static", "has_text", "text", "caption",
}  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("demo_a")
    summary = generate_corpus(SMALL, out, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def plan_by_name() -> dict[str, MediaSpec]:
    return {m.name: m for m in plan_corpus(SMALL).media}


def decode(path: Path) -> tuple[np.ndarray, float, int, int]:
    """All frames ``[T, H, W, 3]`` uint8 plus the stream's fps, width, height."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, float(stream.average_rate), stream.codec_context.width, stream.codec_context.height


def frame_diffs(frames: np.ndarray) -> np.ndarray:
    """``d[t-1] = mean |frame[t] - frame[t-1]|`` for t >= 1."""
    f = frames.astype(np.int16)
    return np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))


def test_layout_and_manifests(corpus: tuple[Path, object]) -> None:
    out, summary = corpus
    videos = pd.read_parquet(out / "videos.parquet")
    scenes = pd.read_parquet(out / "scenes.parquet")
    assert VIDEO_COLUMNS <= set(videos.columns)
    assert SCENE_COLUMNS <= set(scenes.columns)
    assert (videos.kind == "video").sum() == SMALL.num_videos == summary.num_videos
    assert (videos.kind == "image").sum() == SMALL.num_images == summary.num_images
    assert {Path(p).suffix for p in videos[videos.kind == "image"].path} == {".png", ".jpg"}
    on_disk = sorted(p.relative_to(out).as_posix() for p in (out / "raw").iterdir() if p.suffix != ".json")
    assert on_disk == sorted(videos.path)
    assert summary.total_bytes == sum((out / p).stat().st_size for p in videos.path)

    for v in videos.itertuples():
        assert v.width % 2 == 0 and v.height % 2 == 0
        assert 144 <= min(v.width, v.height) <= 240
        rows = scenes[scenes.path == v.path].sort_values("scene_index")
        assert list(rows.scene_index) == list(range(len(rows)))
        assert rows.start_frame.iloc[0] == 0 and rows.end_frame.iloc[-1] == v.num_frames
        assert list(rows.start_frame.iloc[1:]) == list(rows.end_frame.iloc[:-1])  # contiguous
        assert list(v.cut_frames) == list(rows.start_frame.iloc[1:])
        if v.kind == "image":
            assert v.num_frames == 1 and (v.fps == 0 or pd.isna(v.fps)) and list(v.cut_frames) == []
        else:
            assert v.fps in SMALL.fps_choices and 1 <= len(rows) <= SMALL.max_scenes
        side = json.loads((out / f"{v.path}.json").read_text())
        assert side["scenes"] == [
            {"start_frame": int(r.start_frame), "end_frame": int(r.end_frame), "caption": r.caption}
            for r in rows.itertuples()
        ]
        for r in rows.itertuples():
            assert r.static == (r.direction == "none" and r.camera_pan == "none")
            assert r.has_text == bool(r.text)
            assert (r.speed > 0) == (r.direction != "none")
            assert r.caption.startswith(f"a {r.color} {r.shape}")
            assert (f"panning {r.camera_pan}" in r.caption) == (r.camera_pan != "none")
            assert (f'"{r.text}"' in r.caption) == r.has_text


def test_every_video_decodes_as_planned(corpus: tuple[Path, object], plan_by_name: dict[str, MediaSpec]) -> None:
    out, _ = corpus
    videos = pd.read_parquet(out / "videos.parquet")
    scenes = pd.read_parquet(out / "scenes.parquet")
    checked_text = checked_static = checked_cuts = checked_moves = 0
    for v in videos[videos.kind == "video"].itertuples():
        frames, fps, width, height = decode(out / v.path)
        assert frames.shape == (v.num_frames, v.height, v.width, 3)
        assert (width, height) == (v.width, v.height) and fps == v.fps

        # Hard cuts: the frame difference spikes exactly at each cut frame and nowhere else.
        d = frame_diffs(frames)
        spikes = [t + 1 for t in np.flatnonzero(d > CUT_THRESHOLD)]
        assert spikes == list(v.cut_frames), (v.path, d.round(1).tolist())
        checked_cuts += len(v.cut_frames)

        media = plan_by_name[Path(v.path).name]
        rows = scenes[scenes.path == v.path].sort_values("scene_index")
        for row, spec, (a, b) in zip(rows.itertuples(), media.scenes, media.scene_bounds):
            # The manifest describes the spec that was rendered.
            assert (row.start_frame, row.end_frame) == (a, b)
            assert (row.shape, row.color, row.background, row.background_color) == (
                spec.shape, spec.color, spec.background, spec.background_color,
            )  # fmt: skip
            assert (row.direction, row.camera_pan, row.speed, row.text) == (
                spec.moving_direction, spec.camera_pan, spec.speed, spec.text,
            )  # fmt: skip
            ref = render_scene_frames(spec, v.width, v.height, b - a)
            # The decoded scene is the rendered scene up to compression error.
            err = np.abs(frames[a:b].astype(np.int16) - ref.astype(np.int16)).mean()
            assert err < 4.0, (v.path, a, err)

            # The object's colour sits at its expected centre (first and middle frame).
            size = object_pixel_size(spec, v.width, v.height)
            box = text_box(spec, v.width, v.height)
            for t in (0, (b - a) // 2):
                cx, cy = object_center(spec, v.width, v.height, t)
                x, y = int(cx), int(cy)
                if box and box[0] - size <= x < box[2] + size and box[1] - size <= y < box[3] + size:
                    continue  # under or next to the text
                px = frames[a + t, y, x].astype(int)
                assert np.abs(px - np.array(vocab.COLORS[row.color])).max() < 40, (v.path, a + t, px, row.color)

            # The object's pixels move the way the manifest says (skipped while it wraps).
            if row.direction != "none" and b - a > 1:
                rgb = np.array(vocab.COLORS[row.color])
                masks = [np.all(np.abs(frames[a + t].astype(int) - rgb) < 40, axis=-1) for t in (0, 1)]
                axis = 1 if row.direction in ("left", "right") else 0
                coords = [np.nonzero(m)[axis] for m in masks]
                extent = frames.shape[1 + axis]  # height for up/down, width for left/right
                if all(len(c) and c.max() - c.min() < extent / 2 for c in coords):
                    sign = 1 if row.direction in ("right", "down") else -1
                    shift = coords[1].mean() - coords[0].mean()
                    assert shift * sign > 0.5 * row.speed * extent, (v.path, a, row.direction, shift)
                    checked_moves += 1

            # Burned-in text: the text area differs from the text-free render.
            if spec.has_text:
                x0, y0, x1, y1 = box
                bare_spec = dataclasses.replace(spec, text="", text_style="none")
                bare = render_scene_frames(bare_spec, v.width, v.height, 1)[0]
                got = frames[a, y0:y1, x0:x1].astype(np.int16)
                assert np.abs(got - bare[y0:y1, x0:x1]).mean() > 25
                assert np.abs(got - ref[0, y0:y1, x0:x1]).mean() < 10
                checked_text += 1

            # Static scenes do not move; the others do.
            if b - a > 1:
                inner = frame_diffs(frames[a:b])
                if spec.static:
                    assert inner.max() < 0.5, (v.path, a, inner.max())
                    checked_static += 1
                else:
                    assert inner.mean() > 0.2, (v.path, a, inner.mean())
    assert checked_text >= 2 and checked_static >= 2 and checked_cuts >= 3 and checked_moves >= 3


def test_still_images_match_render(corpus: tuple[Path, object], plan_by_name: dict[str, MediaSpec]) -> None:
    out, _ = corpus
    videos = pd.read_parquet(out / "videos.parquet")
    for v in videos[videos.kind == "image"].itertuples():
        img = np.asarray(Image.open(out / v.path).convert("RGB"))
        assert img.shape == (v.height, v.width, 3)
        media = plan_by_name[Path(v.path).name]
        ref = render_scene_frames(media.scenes[0], v.width, v.height, 1)[0]
        err = np.abs(img.astype(np.int16) - ref).mean()
        assert err == 0 if v.path.endswith(".png") else err < 3.0


def _manifest_hashes(out: Path) -> dict[str, str]:
    files = [out / "videos.parquet", out / "scenes.parquet", *sorted((out / "raw").glob("*.json"))]
    return {f.relative_to(out).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_same_seed_same_corpus_other_seed_differs(corpus: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = corpus
    # Same seed, one worker instead of two: byte-identical manifests and media files (x264 on
    # the x86-64 baseline asm; on its AVX-512 paths 1 in 4 demo videos varied between encodes).
    again = tmp_path / "again"
    generate_corpus(SMALL.model_copy(update={"workers": 1}), again, progress=False)
    assert _manifest_hashes(again) == _manifest_hashes(out)
    media = sorted(p.relative_to(out / "raw").as_posix() for p in (out / "raw").iterdir() if p.suffix != ".json")
    assert len(media) == SMALL.num_videos + SMALL.num_images
    for name in media:
        assert (again / "raw" / name).read_bytes() == (out / "raw" / name).read_bytes(), name

    other = tmp_path / "other"
    generate_corpus(SMALL.model_copy(update={"seed": 1, "workers": 1}), other, progress=False)
    captions = [pd.read_parquet(d / "scenes.parquet").caption.tolist() for d in (out, other)]
    assert captions[0] != captions[1]
    assert _manifest_hashes(other)["videos.parquet"] != _manifest_hashes(out)["videos.parquet"]


def test_regenerating_replaces_stale_files(tmp_path: Path) -> None:
    cfg = DemoConfig(num_videos=2, num_images=1, short_sides=[144], max_seconds=1.5, workers=1)
    generate_corpus(cfg.model_copy(update={"num_videos": 3}), tmp_path, progress=False)
    generate_corpus(cfg, tmp_path, progress=False)
    media = sorted(p.name for p in (tmp_path / "raw").iterdir() if p.suffix != ".json")
    assert media == ["image_0000.png", "video_0000.mp4", "video_0001.mp4"]
    assert len(pd.read_parquet(tmp_path / "videos.parquet")) == 3


def test_video_bytes_repeat_for_the_same_frames(tmp_path: Path) -> None:
    """The same frames, encoded eight times in one process at the demo's veryfast preset, give one
    file (before the asm cap: 2-5 versions for 1 in 4 demo videos on an AVX-512 CPU)."""
    plan = plan_corpus(DemoConfig(num_videos=12, num_images=0, short_sides=[144], max_seconds=2.0, seed=3))
    digests: dict[str, set[str]] = {}
    for media in plan.videos[:6]:
        for k in range(8):
            name, _, _ = write_media(media, str(tmp_path), crf=23, preset="veryfast")
            digests.setdefault(name, set()).add(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert {name: len(d) for name, d in digests.items()} == {name: 1 for name in digests}


def test_libx264_options_cap_asm_on_x86_64_only() -> None:
    assert libx264_options(23, "veryfast", 1, machine="x86_64") == {
        "crf": "23", "preset": "veryfast", "threads": "1", "x264-params": "asm=MMX2,SSE,SSE2",
    }
    assert "x264-params" not in libx264_options(23, "veryfast", 1, machine="aarch64")
