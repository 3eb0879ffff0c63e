"""The attribute classifier: label-consistent augmentation, learning on rendered demo scenes, I/O."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation_helpers import FRAMES, INTERVAL, labelled, random_spec, render, one_torch_thread  # noqa: F401 (autouse fixture)
from soraflow.evaluation.classifier import (
    AttributeClassifier,
    ClassifierSpec,
    FrameFeatureExtractor,
    LabelledClip,
    augment_window,
    evaluate_on_clips,
    load_classifier,
    predict_videos,
    read_report,
    save_classifier,
    train_classifier,
)
from soraflow.evaluation.clips import fixed_windows, random_window, window_indices
from soraflow.evaluation.metrics import object_speed

SPEC = dict(width=8, feature_dim=32, num_frames=FRAMES, height=32, width_px=32, frame_interval=INTERVAL)


def _centroid_step(window: np.ndarray, color: str) -> tuple[float, float]:
    """Mean (dx, dy) of the object's centroid between consecutive frames."""
    from soraflow.demo.vocab import COLORS

    mask = np.linalg.norm(window.astype(np.float32) - np.asarray(COLORS[color], np.float32), axis=-1) < 80
    ys, xs = np.mgrid[: window.shape[1], : window.shape[2]]
    cx = (mask * xs).sum((1, 2)) / mask.sum((1, 2))
    cy = (mask * ys).sum((1, 2)) / mask.sum((1, 2))
    return float(np.median(np.diff(cx))), float(np.median(np.diff(cy)))


@pytest.mark.parametrize(
    "direction, flips, expected",
    [
        ("right", dict(hflip=1.0), "left"),
        ("up", dict(vflip=1.0), "down"),
        ("left", dict(reverse=1.0), "right"),
        ("down", dict(reverse=1.0), "up"),
        ("up", dict(hflip=1.0), "up"),
        ("right", dict(freeze=1.0), "none"),
    ],
)
def test_augmentation_moves_the_label_with_the_pixels(direction, flips, expected):
    rng = np.random.default_rng(0)
    spec = random_spec(rng, direction=direction, shape="square", speed=0.02)
    spec = type(spec)(**{**spec.__dict__, "start_x": 0.5, "start_y": 0.5})
    clip = LabelledClip(render(spec, 6), spec.color, spec.shape, direction)
    probs = dict(hflip=0.0, vflip=0.0, reverse=0.0, freeze=0.0) | flips
    window, label = augment_window(clip.frames, clip, rng, **probs)
    assert label == expected
    dx, dy = _centroid_step(window, spec.color)
    moved = {"right": dx > 0.3, "left": dx < -0.3, "down": dy > 0.3, "up": dy < -0.3, "none": abs(dx) + abs(dy) < 1e-6}
    assert moved[expected], (dx, dy)


def test_vertical_flip_never_turns_a_triangle_upside_down():
    rng = np.random.default_rng(0)
    spec = random_spec(rng, direction="up", shape="triangle")
    clip = LabelledClip(render(spec, 4), spec.color, "triangle", "up")
    window, label = augment_window(clip.frames, clip, rng, hflip=0.0, vflip=1.0, reverse=0.0, freeze=0.0)
    assert label == "up" and np.array_equal(window, clip.frames)


def test_still_images_train_as_standing_still():
    rng = np.random.default_rng(0)
    spec = random_spec(rng, direction="none")
    clip = LabelledClip(render(spec, 1), spec.color, spec.shape, None)
    window = random_window(clip.frames, FRAMES, INTERVAL, rng)
    assert window.shape[0] == FRAMES
    _, label = augment_window(window, clip, rng, hflip=0.5, vflip=0.5, reverse=0.5, freeze=0.0)
    assert label == "none"


def test_windows_use_the_frame_interval_and_shrink_it_for_short_clips():
    assert window_indices(100, 8, 2, 5).tolist() == list(range(5, 21, 2))
    assert window_indices(10, 8, 2, 0).tolist() == list(range(8))  # 10 frames: stride 1 fits
    assert window_indices(4, 8, 2, 0).tolist() == [0, 1, 2, 3, 3, 3, 3, 3]
    frames = np.arange(40)[:, None, None, None].repeat(2, 1).astype(np.uint8)
    wins = fixed_windows(frames, 4, 3, 3)
    assert wins.shape[:2] == (3, 4) and wins[0, :, 0, 0, 0].tolist() == [0, 3, 6, 9]
    assert wins[-1, -1, 0, 0, 0] == 39


def test_classifier_learns_colour_shape_and_direction_on_rendered_scenes():
    """150 steps of a tiny network on 40 renders: far above chance on 30 unseen renders."""
    torch.manual_seed(0)
    train = labelled(np.random.default_rng(1), 40)
    val = labelled(np.random.default_rng(2), 30)
    model, report = train_classifier(
        train, val, ClassifierSpec(**SPEC), epochs=15, windows_per_clip=4, batch_size=16, lr=3e-3, val_windows_per_clip=2,
        seed=0, progress=False,
    )
    assert report["val_windows"] == 60 and report["steps"] == 150
    assert report["val_color_accuracy"] >= 0.9, report  # chance 0.25
    assert report["val_shape_accuracy"] >= 0.7, report  # chance 0.33
    assert report["val_direction_accuracy"] >= 0.7, report  # chance 0.2
    # the speed of the object (an independent measurement) agrees with what the classifier saw
    moving = [c for c in val if c.direction != "none"]
    speeds = object_speed(np.stack([c.frames[::INTERVAL][:FRAMES] for c in moving]), [c.color for c in moving])
    assert np.nanmin(speeds) > 0.5


def test_save_load_round_trip_and_feature_extractor(tmp_path):
    torch.manual_seed(0)
    model = AttributeClassifier(ClassifierSpec(**SPEC)).eval()
    videos = np.stack([c.frames[::INTERVAL] for c in labelled(np.random.default_rng(0), 5)])
    before = predict_videos(model, videos)
    save_classifier(model, tmp_path / "clf", {"val_color_accuracy": 0.5, "seconds": 12.5})
    # no wall time in the folder: the same model and accuracies give the same bytes (DVC hash)
    assert read_report(tmp_path / "clf") == {"val_color_accuracy": 0.5}
    loaded = load_classifier(tmp_path / "clf")
    after = predict_videos(loaded, videos)
    assert before["color"] == after["color"] and before["direction"] == after["direction"]
    torch.testing.assert_close(before["features"], after["features"])
    assert before["features"].shape == (5, FRAMES, 32) and len(before["frame_color"][0]) == FRAMES
    extractor = FrameFeatureExtractor(loaded)
    assert extractor.num_features == 32
    images = torch.from_numpy(videos[:, 0]).permute(0, 3, 1, 2)
    feats = extractor(images)
    raw = before["features"][:, 0]
    torch.testing.assert_close(feats, raw * (32**0.5 / raw.norm(dim=1, keepdim=True)))
    # other sizes are resized to the classifier's
    assert extractor(torch.nn.functional.interpolate(images.float(), size=(48, 48)).to(torch.uint8)).shape == (5, 32)
    with pytest.raises(FileNotFoundError, match="eval-classifier"):
        load_classifier(tmp_path / "missing")


def test_accuracy_on_clips_skips_unknown_directions():
    model = AttributeClassifier(ClassifierSpec(**SPEC)).eval()
    clips = labelled(np.random.default_rng(0), 3)
    clips[0] = LabelledClip(clips[0].frames, clips[0].color, clips[0].shape, None)
    out = evaluate_on_clips(model, clips, 2, prefix="x_")
    assert out["x_windows"] == 6 and 0.0 <= out["x_direction_accuracy"] <= 1.0
    assert set(out) == {"x_color_accuracy", "x_shape_accuracy", "x_direction_accuracy", "x_windows"}


def test_load_clips_decodes_in_table_order_whatever_the_thread_count(tmp_path):
    """`load_clips` decodes two clips at a time in threads by default; the frames and their
    order are those of a decode in the loop (clips of different lengths finish out of order)."""
    from evaluation_helpers import write_corpus
    from soraflow.evaluation.clips import decode_clip, load_clips

    table = write_corpus(tmp_path, np.random.default_rng(0), n_train=5, n_heldout=0, frames=12, size=40)
    table.loc[0, "path"] = str(tmp_path / "long.mp4")
    write_corpus(tmp_path / "long", np.random.default_rng(1), n_train=1, n_heldout=0, frames=60, size=40)
    (tmp_path / "long" / "clip_000.mp4").rename(tmp_path / "long.mp4")
    expected = [decode_clip(p, 32, 32) for p in table["path"]]
    assert [len(f) for f in expected] == [60, 12, 12, 12, 12]
    for workers in (1, 2, 3):
        got = load_clips(table, 32, 32, progress=False, workers=workers)
        assert len(got) == len(expected)
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True)), workers
    relative = table.assign(path=[p.name for p in map(Path, table["path"])])
    relative.loc[0, "path"] = "long.mp4"
    got = load_clips(relative, 32, 32, root=tmp_path, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    with pytest.raises(Exception, match="missing.mp4"):
        load_clips(table.assign(path=[*table["path"][:-1], str(tmp_path / "missing.mp4")]), 32, 32, progress=False)
