"""Corpus plan, vocabulary, config validation and the renderer (no files written)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from soraflow.config_base import ConfigError, parse_model
from soraflow.demo import vocab
from soraflow.demo.config import DemoConfig
from soraflow.demo.render import object_center, object_pixel_size, pan_offset, render_scene_frames, text_box
from soraflow.demo.spec import SceneSpec, frame_size, plan_corpus


@pytest.fixture(scope="module")
def default_plan():
    return plan_corpus(DemoConfig())


def test_default_plan_covers_the_required_variety(default_plan) -> None:
    cfg = DemoConfig()
    videos, images = default_plan.videos, default_plan.images
    assert len(videos) == cfg.num_videos >= 48 and len(images) == cfg.num_images
    assert {m.name.rsplit(".", 1)[1] for m in images} == {"png", "jpg"}
    assert {m.fps for m in videos} == {24, 25, 30}
    aspects = {round(m.width / m.height, 2) for m in videos}
    assert {1.78, 1.33, 1.0, 0.56} <= aspects
    shorts = {min(m.width, m.height) for m in videos}
    assert min(shorts) == 144 and max(shorts) == 480
    assert all(m.width % 2 == 0 and m.height % 2 == 0 for m in default_plan.media)
    seconds = [m.num_frames / m.fps for m in videos]
    assert min(seconds) < 1.0 and max(seconds) > 10.0
    assert {len(m.scenes) for m in videos} == {1, 2, 3, 4}

    scenes = [s for m in videos for s in m.scenes]
    n = len(scenes)
    assert sum(s.static for s in scenes) == round(cfg.static_fraction * n)
    assert sum(s.has_text for s in scenes) == round(cfg.text_fraction * n)
    assert any(s.camera_pan != "none" for s in scenes)
    assert {s.shape for s in scenes} == set(vocab.SHAPES)
    assert {s.color for s in scenes} == set(vocab.COLORS)
    assert {s.background for s in scenes} == set(vocab.BACKGROUNDS)
    assert {s.moving_direction for s in scenes} == set(vocab.DIRECTIONS)
    assert {s.text_style for s in scenes if s.has_text} == {"title", "subtitle"}


def test_scene_rules(default_plan) -> None:
    cfg = DemoConfig()
    for m in default_plan.videos:
        assert min(m.scene_frames) >= 1
        for prev, cur in zip(m.scenes, m.scenes[1:]):
            a, b = vocab.BACKGROUND_COLORS[prev.background_color], vocab.BACKGROUND_COLORS[cur.background_color]
            assert prev.background_color != cur.background_color and vocab.rgb_distance(a, b) >= 80
        for s in m.scenes:
            assert vocab.colors_compatible(s.color, s.background_color)
            assert cfg.object_size_range[0] <= s.object_size <= cfg.object_size_range[1]
            if s.moving_direction != "none":
                assert cfg.speed_range[0] <= s.speed <= cfg.speed_range[1]
            if s.camera_pan != "none":
                assert s.background == "texture"
                assert cfg.pan_speed_range[0] <= s.pan_speed <= cfg.pan_speed_range[1] < s.speed or s.speed == 0
            assert s.static == (s.moving_direction == "none" and s.camera_pan == "none")


def test_plan_is_seeded() -> None:
    a, b = plan_corpus(DemoConfig(num_videos=8)), plan_corpus(DemoConfig(num_videos=8))
    c = plan_corpus(DemoConfig(num_videos=8, seed=1))
    assert a.videos == b.videos and a.images == b.images
    assert a.videos != c.videos
    # Images come from their own stream: more images leave the videos alone.
    assert plan_corpus(DemoConfig(num_videos=8, num_images=9)).videos == a.videos


@pytest.mark.parametrize(
    ("aspect", "short", "size"),
    [((16, 9), 144, (256, 144)), ((4, 3), 480, (640, 480)), ((1, 1), 240, (240, 240)), ((9, 16), 480, (480, 854))],
)
def test_frame_size(aspect, short, size) -> None:
    assert frame_size(aspect, short) == size


def test_captions() -> None:
    caption = vocab.caption_for("circle", "red", "left", "plain", "navy")
    assert caption == "a red circle moving left on a navy background"
    assert vocab.caption_for("circle", "red", "none", "plain") == "a red circle standing still on a plain background"
    assert (
        vocab.caption_for("square", "green", "none", "texture", camera_pan="right")
        == "a green square standing still on a textured background, camera panning right"
    )
    assert (
        vocab.caption_for("triangle", "blue", "up", "gradient", "pink", text="THE END")
        == 'a blue triangle moving up on a pink gradient background, with the title "THE END"'
    )
    assert vocab.caption_for("circle", "yellow", None, "plain", "gray") == "a yellow circle on a gray background"
    with pytest.raises(ValueError):
        vocab.caption_for("hexagon", "red", "left", "plain")
    spec = SceneSpec("circle", "red", "left", "plain", "navy", speed=0.02)
    assert spec.caption() == "a red circle moving left on a navy background"


@pytest.mark.parametrize(
    "bad",
    [
        {"static_fraction": 1.5},
        {"short_sides": [145]},
        {"aspect_ratios": ["16x9"]},
        {"speed_range": [0.03, 0.01]},
        {"pan_speed_range": [0.02, 0.03]},
        {"speed_range": [0.03, 0.6]},
        {"object_size_range": [0.5, 0.95]},
        {"min_seconds": 5.0, "max_seconds": 2.0},
        {"fps_choices": []},
        {"workers": 0},
        {"preset": "fastest"},
        {"colour": "red"},
    ],
)
def test_config_rejects_bad_values(bad) -> None:
    with pytest.raises(ConfigError) as err:
        parse_model(DemoConfig, bad, "params.yaml")
    assert next(iter(bad)) in str(err.value) or "<root>" in str(err.value)


def test_objects_may_be_larger_than_half_the_frame() -> None:
    cfg = parse_model(DemoConfig, {"object_size_range": [0.45, 0.55]}, "params.yaml")
    sizes = [sc.object_size for m in plan_corpus(cfg).videos for sc in m.scenes]
    assert min(sizes) >= 0.45 and max(sizes) <= 0.55 and max(sizes) > 0.5


def _object_pixels(frame: np.ndarray, color: str) -> np.ndarray:
    return np.all(np.abs(frame.astype(int) - vocab.COLORS[color]) < 30, axis=-1)


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_object_moves_wraps_and_keeps_its_size(direction: str) -> None:
    w, h, n = 160, 90, 60
    spec = SceneSpec("circle", "red", direction, "texture", "gray", speed=0.03, texture="noise", texture_seed=3)
    frames = render_scene_frames(spec, w, h, n)
    areas = [_object_pixels(f, "red").sum() for f in frames]
    # 60 frames at 3% per frame: the object crosses the border at least once and stays whole.
    assert min(areas) > 0.9 * max(areas) > 0
    axis, sign, extent = {"left": (0, -1, w), "right": (0, 1, w), "up": (1, -1, h), "down": (1, 1, h)}[direction]
    c0, c1 = object_center(spec, w, h, 0)[axis], object_center(spec, w, h, 1)[axis]
    assert ((c1 - c0) * sign) % extent == pytest.approx(0.03 * extent)
    # The measured centroid of the object pixels (away from the border) moves the right way.
    ys, xs = np.nonzero(_object_pixels(frames[0], "red"))
    ys2, xs2 = np.nonzero(_object_pixels(frames[1], "red"))
    if axis == 0 and xs.max() - xs.min() < w / 2 and xs2.max() - xs2.min() < w / 2:
        assert np.sign(xs2.mean() - xs.mean()) == sign
    if axis == 1 and ys.max() - ys.min() < h / 2 and ys2.max() - ys2.min() < h / 2:
        assert np.sign(ys2.mean() - ys.mean()) == sign


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_entry_edge_start_touches_the_border_the_object_leaves(direction: str) -> None:
    w, h = 160, 90
    spec = SceneSpec("square", "red", direction, "plain", "gray", speed=0.03, start_x=0.5, start_y=0.5, enter_from_edge=True)
    first, second = render_scene_frames(spec, w, h, 2)
    ys, xs = np.nonzero(_object_pixels(first, "red"))
    size = object_pixel_size(spec, w, h)
    # Whole (no wrapped part on the far side) and against the entry border.
    assert len(xs) > 0.6 * size * size
    edge = {"right": xs.min(), "left": w - 1 - xs.max(), "down": ys.min(), "up": h - 1 - ys.max()}[direction]
    assert edge <= 0.15 * size  # the shape's own margin inside its box
    assert xs.max() - xs.min() < size + 2 and ys.max() - ys.min() < size + 2
    # The other coordinate keeps its drawn start; the object moves away from the border.
    axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[direction]
    other = object_center(spec, w, h, 0)[1 - axis]
    assert other == pytest.approx(0.5 * (h if axis == 0 else w))
    ys2, xs2 = np.nonzero(_object_pixels(second, "red"))
    moved = (xs2.mean() - xs.mean()) if axis == 0 else (ys2.mean() - ys.mean())
    assert np.sign(moved) == sign


def test_object_start_config_marks_moving_scenes_only() -> None:
    plan = plan_corpus(DemoConfig(num_videos=24, num_images=2, object_start="entry_edge"))
    scenes = [sc for m in plan.videos for sc in m.scenes]
    moving = [sc for sc in scenes if sc.direction in vocab.MOVING_DIRECTIONS]
    assert moving and all(sc.enter_from_edge for sc in moving)
    assert all(not sc.enter_from_edge for sc in scenes if sc.direction not in vocab.MOVING_DIRECTIONS)
    # Same draws otherwise: the default plan differs only in the flag.
    base = [sc for m in plan_corpus(DemoConfig(num_videos=24, num_images=2)).videos for sc in m.scenes]
    assert [dataclasses.replace(sc, enter_from_edge=False) for sc in scenes] == base


@pytest.mark.parametrize("pan", ["left", "right"])
def test_pan_scrolls_the_background_only(pan: str) -> None:
    w, h = 200, 120
    spec = SceneSpec("square", "yellow", "none", "texture", "navy", camera_pan=pan, pan_speed=0.01, texture="checker")
    frames = render_scene_frames(spec, w, h, 6)
    step = pan_offset(spec, w, 5) - pan_offset(spec, w, 0)
    assert abs(step) == 10 and (step > 0) == (pan == "right")
    # Background content moves opposite to the camera: column c at frame 5 showed at c + step at frame 0.
    size = object_pixel_size(spec, w, h)
    cy = int(object_center(spec, w, h, 0)[1])
    rows = slice(0, max(1, cy - size // 2 - 2))  # above the object
    a, b = frames[0][rows].astype(int), frames[5][rows].astype(int)
    if step > 0:
        assert np.array_equal(b[:, : w - step], a[:, step:])
    else:
        assert np.array_equal(b[:, -step:], a[:, : w + step])
    # The object stays put relative to the frame.
    assert np.array_equal(_object_pixels(frames[0], "yellow"), _object_pixels(frames[5], "yellow"))


def test_render_is_deterministic_and_length_independent() -> None:
    spec = SceneSpec(
        "triangle", "blue", "down", "texture", "pink", speed=0.02, camera_pan="left", pan_speed=0.008,
        texture="noise", texture_seed=11, text="LIVE", text_style="title",
    )  # fmt: skip
    a = render_scene_frames(spec, 128, 96, 12)
    b = render_scene_frames(spec, 128, 96, 12)
    c = render_scene_frames(spec, 128, 96, 30)
    assert a.dtype == np.uint8 and a.shape == (12, 96, 128, 3)
    assert np.array_equal(a, b) and np.array_equal(a, c[:12])
    other_seed = render_scene_frames(dataclasses.replace(spec, texture_seed=12), 128, 96, 1)
    assert not np.array_equal(a[0], other_seed[0])


def test_text_is_drawn_inside_its_box() -> None:
    spec = SceneSpec("circle", "green", "none", "plain", "purple", start_y=0.7, text="GAME OVER", text_style="title")
    bare = dataclasses.replace(spec, text="", text_style="none")
    w, h = 256, 144
    with_text, without = render_scene_frames(spec, w, h, 1)[0], render_scene_frames(bare, w, h, 1)[0]
    x0, y0, x1, y1 = text_box(spec, w, h)
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and y1 < h / 2  # a title sits in the upper part
    changed = np.any(with_text != without, axis=-1)
    assert changed[y0:y1, x0:x1].mean() > 0.2 and changed.sum() == changed[y0:y1, x0:x1].sum()
    assert text_box(bare, w, h) is None


def test_scene_spec_validates() -> None:
    with pytest.raises(ValueError):
        SceneSpec("circle", "magenta")
    with pytest.raises(ValueError):
        SceneSpec("circle", "red", text="HI")  # text without a style
