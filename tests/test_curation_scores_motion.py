"""Motion score and camera label on synthetic frames with a known displacement."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import torch

from soraflow.config_base import ConfigError, parse_model
from soraflow.curation.scores import ScoresConfig, load_scorers, sample_indices, score_clip
from soraflow.curation.scores.motion import analyse_flow, working_size
from soraflow.curation.scores.sampling import clip_positions, flow_pair_positions, middle_position

# OCR is not under test here: keep it off so these tests stay fast
CFG = ScoresConfig(ocr_frames=0)


@pytest.fixture(scope="module")
def scorers():
    return load_scorers(CFG)


def _texture(h: int = 700, w: int = 1100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2.5)


def _clip(kind: str, n: int, out_hw: tuple[int, int], speed: float = 1.5) -> np.ndarray:
    """``n`` frames of a 1000x600 window over a texture, moving by ``speed`` px/frame (window px)."""
    base = _texture()
    frames = []
    for i in range(n):
        if kind == "pan":
            m = np.float32([[1, 0, -speed * i], [0, 1, 0]])
        elif kind == "tilt":
            m = np.float32([[1, 0, 0], [0, 1, -speed * i]])
        elif kind == "zoom":
            m = cv2.getRotationMatrix2D((550.0, 350.0), 0.0, 1.0 + 0.006 * i)
        else:
            m = np.float32([[1, 0, 0], [0, 1, 0]])
        f = cv2.warpAffine(base, m, (1100, 700), borderMode=cv2.BORDER_REFLECT)[50:650, 50:1050]
        frames.append(cv2.resize(f, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_AREA))
    return np.stack(frames)


def _score(frames: np.ndarray, scorers, cfg=CFG) -> dict:
    idx = sample_indices(len(frames), 24.0, cfg)
    return score_clip(frames[idx], idx, 24.0, None, scorers, cfg)


def test_sample_indices_cover_roles():
    for n in (1, 2, 3, 7, 48, 301):
        idx = sample_indices(n, 24.0, CFG)
        assert idx == sorted(set(idx)) and idx[0] == 0 and idx[-1] == n - 1
        pairs = flow_pair_positions(idx, CFG, n)
        assert len(pairs) == (0 if n == 1 else min(CFG.flow_pairs, len(pairs)))
        for a, b in pairs:
            assert 1 <= idx[b] - idx[a] <= CFG.flow_gap
        assert 0 <= middle_position(idx, n) < len(idx)
    idx = sample_indices(300, 24.0, CFG)
    got = [idx[p] for p in clip_positions(idx, CFG, 300)]
    assert got == [round(0.1 * 299), round(0.5 * 299), round(0.9 * 299)]
    assert [(idx[a], idx[b]) for a, b in flow_pair_positions(idx, CFG, 300)] == [(30, 32), (148, 150), (267, 269)]


def test_working_size_keeps_aspect_and_caps_long_side():
    assert working_size(1080, 1920, 256, 512) == (256, 456)
    assert working_size(1920, 1080, 256, 512) == (456, 256)
    assert working_size(16, 512, 256, 512) == (256, 512)  # 32:1 is squeezed along its long side
    assert working_size(16, 16, 256, 512) == (256, 256)


def test_pan_motion_is_the_shift_at_working_size_for_any_source_size(scorers):
    speed = 1.5  # px/frame in the 1000x600 window; working short side 256 -> x 256/600
    expected = speed * 256 / 600
    values = []
    for hw in [(240, 400), (600, 1000)]:
        row = _score(_clip("pan", 30, hw, speed), scorers)
        values.append(row["motion"])
        assert row["camera_motion"] == "pan"
        assert row["camera_dx"] < 0 and abs(row["camera_dy"]) < 0.1 * expected
        assert row["motion"] == pytest.approx(expected, rel=0.15)
    assert values[0] == pytest.approx(values[1], rel=0.05)


def test_motion_does_not_depend_on_the_frame_gap(scorers):
    frames = _clip("pan", 30, (240, 400), 1.0)
    a = _score(frames, scorers, CFG.model_copy(update={"flow_gap": 1}))["motion"]
    b = _score(frames, scorers, CFG.model_copy(update={"flow_gap": 4}))["motion"]
    assert a == pytest.approx(b, rel=0.1)
    # handing every frame instead of the sampled ones gives the same definition
    idx = list(range(len(frames)))
    c = score_clip(frames, idx, 24.0, None, scorers, CFG)["motion"]
    assert c == pytest.approx(_score(frames, scorers)["motion"], rel=0.05)


def test_static_scene_has_no_motion(scorers):
    row = _score(_clip("static", 20, (240, 400)), scorers)
    assert row["motion"] < 0.02
    assert row["camera_motion"] == "static"


def test_tilt_and_zoom_labels(scorers):
    assert _score(_clip("tilt", 20, (240, 400), 1.5), scorers)["camera_motion"] == "tilt"
    row = _score(_clip("zoom", 20, (240, 400)), scorers)
    assert row["camera_motion"] == "zoom" and row["camera_zoom"] > 0


def test_object_moving_on_still_background_is_motion_with_static_camera(scorers):
    frames = np.stack([np.full((240, 320, 3), 30, np.uint8) for _ in range(24)])
    for i, f in enumerate(frames):
        cv2.circle(f, (60 + 4 * i, 120), 40, (230, 80, 40), -1)
    row = _score(frames, scorers)
    assert row["camera_motion"] == "static"
    assert row["motion"] > 0.05 and row["motion_p90"] > row["motion"]


def test_object_with_the_background_luma_still_counts_as_motion(scorers):
    # green (30, 180, 40) has the luma of gray (120, 120, 120): grayscale flow alone sees nothing
    frames = np.stack([np.full((240, 240, 3), 120, np.uint8) for _ in range(24)])
    for i, f in enumerate(frames):
        cv2.circle(f, (50 + 5 * i, 120), 35, (30, 180, 40), -1)
    assert np.ptp(cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)) <= 2
    row = _score(frames, scorers)
    assert row["motion"] > 0.1 and row["camera_motion"] == "static"


def test_coding_noise_on_a_still_frame_is_no_motion(scorers):
    ramp = np.linspace(40, 200, 400, dtype=np.float32)[None, :, None] * np.ones((240, 1, 3), np.float32)
    base = ramp.astype(np.uint8)
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(20):  # a few re-coded pixels per frame, as H.264 does on a still scene
        f = base.copy()
        ys, xs = rng.integers(0, 240, 30), rng.integers(0, 400, 30)
        f[ys, xs] = np.clip(f[ys, xs].astype(int) + rng.integers(-25, 26, (30, 1)), 0, 255).astype(np.uint8)
        frames.append(f)
    row = _score(np.stack(frames), scorers)
    assert row["motion"] == 0.0 and row["camera_motion"] == "static"
    # without the rule DIS spreads the few changed pixels over the flat ramp (~0.65 px/frame)
    off = CFG.model_copy(update={"flow_still_fraction": 0.0})
    assert _score(np.stack(frames), load_scorers(off), off)["motion"] > 0.1


def test_single_frame_clip_has_no_motion_value(scorers):
    frames = _clip("static", 1, (64, 64))
    row = score_clip(frames, [0], 24.0, None, scorers, CFG)
    assert math.isnan(row["motion"]) and row["camera_motion"] is None


def test_flow_statistics_are_the_same_for_any_buffer_and_thread():
    """The same flow gives the same scores bit for bit (clips.parquet's DVC hash depends on it).

    cv2.magnitude (IPP) rounded a third of the pixels one ulp off, differently by buffer
    alignment: a demo clip's ``motion`` read 2.6580138206481934 or 2.658013900121053.
    """
    rng = np.random.default_rng(3)
    for u, v in (rng.normal(size=(40, 2)) * 3).astype(np.float32):  # uniform fields: p90 is |(u, v)|
        exact = np.float32(math.hypot(float(u), float(v)))  # |(u, v)| rounded once to float32
        assert analyse_flow(np.broadcast_to(np.float32([u, v]), (64, 80, 2)), 1).p90 == exact
    flow = (rng.normal(size=(240, 320, 2)) * 3).astype(np.float32)
    ref = analyse_flow(flow, 2)
    results = []
    for offset in range(16):  # the same field at every float offset of a 64-byte line
        buf = np.empty(flow.size + 16, np.float32)
        moved = buf[offset : offset + flow.size].reshape(flow.shape)
        moved[...] = flow
        results.append(analyse_flow(moved, 2))
    with ThreadPoolExecutor(2) as pool:  # the curation's task runner scores clips in threads
        results += list(pool.map(lambda _: analyse_flow(flow.copy(), 2), range(8)))
    assert all(r == ref for r in results)


def test_farneback_agrees_with_dis(scorers):
    cfg = CFG.model_copy(update={"flow_method": "farneback"})
    fb = load_scorers(cfg)
    frames = _clip("pan", 20, (240, 400), 1.5)
    assert _score(frames, fb, cfg)["motion"] == pytest.approx(_score(frames, scorers)["motion"], rel=0.15)


@pytest.fixture
def one_torch_thread():
    """Other test processes share the 2 cores: torch's spinning threads make RAFT 20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_raft_weights_load_from_path_and_run(tmp_path, one_torch_thread):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    cfg = ScoresConfig(flow_method="raft", raft_weights=str(path), raft_iters=2, flow_short_side=128, ocr_frames=0)
    sc = load_scorers(cfg)
    frames = _clip("pan", 6, (96, 160))
    row = _score(frames, sc, cfg)
    assert np.isfinite(row["motion"]) and row["motion"] >= 0  # untrained: value is arbitrary
    assert row["camera_motion"] in {"static", "pan", "tilt", "zoom", "complex"}
    bad = tmp_path / "other.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(ConfigError, match="raft_weights"):
        load_scorers(cfg.model_copy(update={"raft_weights": str(bad)}))
    with pytest.raises(ConfigError, match="raft_weights"):
        load_scorers(cfg.model_copy(update={"raft_weights": str(tmp_path / "missing.pth")}))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="raft_weights"):
        parse_model(ScoresConfig, {"flow_method": "raft"}, "params.yaml")
    with pytest.raises(ConfigError, match="flow_short_side"):
        parse_model(ScoresConfig, {"flow_method": "raft", "raft_weights": "x.pth", "flow_short_side": 64}, "p")
    with pytest.raises(ConfigError, match="flow_pairs"):
        parse_model(ScoresConfig, {"flow_pairs": 0}, "params.yaml")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_model(ScoresConfig, {"flow_size": 3}, "params.yaml")
