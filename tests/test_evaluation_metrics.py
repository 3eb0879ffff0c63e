"""FID/KID on in-domain features, temporal proxies, PSNR, confusion tables, CLIPSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation_helpers import INTERVAL, random_spec, render, one_torch_thread  # noqa: F401 (autouse fixture)
from soraflow.evaluation.classifier import AttributeClassifier, ClassifierSpec, FrameFeatureExtractor
from soraflow.evaluation.metrics import (
    accuracy,
    confusion_table,
    fid_kid,
    flicker,
    frame_consistency,
    frames_of,
    frechet_distance,
    object_speed,
    psnr,
)


class ColourStats(torch.nn.Module):
    """A transparent feature extractor for testing the metric code: per-channel mean, std and
    a 3-bin histogram of each frame (the classifier's features are tested elsewhere)."""

    num_features = 15

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        hist = [((x >= lo) & (x < lo + 1 / 3 + 1e-6)).float().mean(dim=(2, 3)) for lo in (0.0, 1 / 3, 2 / 3)]
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), *hist], dim=1)


@pytest.fixture(scope="module")
def extractor():
    return ColourStats()


def _videos(seed: int, n: int, **kw) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([render(random_spec(rng, **kw), 8) for _ in range(n)])


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift(extractor):
    real = _videos(0, 12)
    same = frechet_distance(extractor, real, real)
    darker = (real.astype(np.int16) * 6 // 10).astype(np.uint8)  # a global shift of every frame
    shifted = frechet_distance(extractor, real, darker)
    assert shifted > 0.05
    assert abs(same) < 1e-6 * shifted


def test_fid_with_the_classifier_features():
    torch.manual_seed(0)
    features = FrameFeatureExtractor(AttributeClassifier(ClassifierSpec(width=8, feature_dim=16)))
    real = _videos(0, 6)
    same = frechet_distance(features, real, real)
    other = frechet_distance(features, real, 255 - real)
    assert other > 0 and abs(same) < 1e-6 * other


def test_fid_real_halves_is_smaller_than_against_another_distribution(extractor):
    """Two halves of one distribution are closer than one half and a different distribution."""
    reds = _videos(1, 24, color="red")
    halves = frechet_distance(extractor, reds[:12], reds[12:])
    vs_blue = frechet_distance(extractor, reds[:12], _videos(2, 12, color="blue"))
    assert 0 < halves < vs_blue


def test_kid_is_near_zero_for_one_distribution(extractor):
    a, b = _videos(3, 10), _videos(4, 10)
    out = fid_kid(extractor, a, b, kid_subset_size=50, kid_subsets=20)
    assert set(out) == {"fid", "kid_mean", "kid_std"} and all(math.isfinite(v) for v in out.values())
    far = fid_kid(extractor, a, (a // 3).astype(np.uint8), kid_subset_size=50, kid_subsets=20)
    assert far["kid_mean"] > out["kid_mean"] and far["fid"] > out["fid"]
    # the subsets come from the seed: the same KID whatever the global RNG did before, which is left alone
    torch.manual_seed(123)
    torch.rand(7)
    state = torch.get_rng_state()
    again = fid_kid(extractor, a, b, kid_subset_size=50, kid_subsets=20)
    assert again == out and torch.equal(torch.get_rng_state(), state)
    assert fid_kid(extractor, a, b, kid_subset_size=50, kid_subsets=20, seed=1)["kid_mean"] != out["kid_mean"]


def test_fid_rejects_bad_inputs(extractor):
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(extractor, _videos(0, 2)[:, :1].reshape(2, 1, 32, 32, 3)[:1], _videos(0, 2))
    with pytest.raises(ValueError, match="uint8"):
        frames_of(np.zeros((2, 4, 8, 8, 3), np.float32))


def test_flicker_static_vs_flickering_vs_moving():
    static = np.repeat(render(random_spec(np.random.default_rng(0), direction="none"), 1), 8, axis=0)[None]
    flick = np.zeros((1, 8, 32, 32, 3), np.uint8)
    flick[:, 1::2] = 255
    moving = render(random_spec(np.random.default_rng(0), direction="left"), 8)[None]
    f = flicker(np.concatenate([static, flick, moving]))
    assert f[0] == 0.0 and f[1] == pytest.approx(1.0) and 0 < f[2] < 0.2
    assert flicker(static[:, :1])[0] == 0.0


def test_frame_consistency_is_one_for_identical_frames_and_lower_otherwise():
    same = torch.ones(2, 5, 4)
    assert np.allclose(frame_consistency(same), 1.0)
    alternating = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(3, 1)[None]  # orthogonal neighbours
    assert frame_consistency(alternating)[0] == pytest.approx(0.0, abs=1e-6)


def test_object_speed_measures_the_rendered_motion():
    rng = np.random.default_rng(5)
    width = 32
    still = render(random_spec(rng, direction="none", color="red"), 8)
    spec = random_spec(rng, direction="right", color="blue", speed=0.04)
    moving = render(spec, 8 * INTERVAL)[::INTERVAL]
    speeds = object_speed(np.stack([still, moving]), ["red", "blue"])
    assert speeds[0] == pytest.approx(0.0, abs=1e-6)
    assert speeds[1] == pytest.approx(spec.speed * width * INTERVAL, rel=0.25)  # 2.56 px per sampled frame
    # no object of the prompt's colour: unknown, not zero
    assert math.isnan(object_speed(still[None], ["yellow"])[0])


def test_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) == math.inf
    b = a.copy()
    b[...] = 10  # MSE 100 -> 10 log10(255^2 / 100)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    with pytest.raises(ValueError, match="equal shapes"):
        psnr(a, np.zeros((4, 5, 3), np.uint8))


def test_accuracy_and_confusion_table():
    pred = ["left", "left", "up", "none"]
    true = ["left", "right", "up", None]
    assert accuracy(pred, true) == pytest.approx(2 / 3)
    assert math.isnan(accuracy(pred, [None] * 4))
    table = confusion_table(pred[:3], true[:3], ["left", "right", "up"])
    assert table.loc["right", "left"] == 1 and table.loc["left", "left"] == 1 and table.to_numpy().sum() == 3


def test_clipsim_with_a_tiny_open_clip_model(tmp_path):
    """The CLIP path: a tiny random open_clip model saved to a file, loaded by path (no download)."""
    from evaluation_helpers import tiny_clip_weights

    from soraflow.evaluation.clip import clipsim, load_clip_extractor

    arch, weights = tiny_clip_weights(tmp_path)
    clip = load_clip_extractor(arch, str(weights))
    assert clip.num_features == 16
    videos = _videos(0, 3)
    scores = clipsim(clip, videos, ["a red circle", "a blue square", "a green triangle"])
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 100))
    emb = clip(frames_of(videos[:1]))
    assert emb.shape == (8, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(8), atol=1e-4)
    from soraflow.config_base import ConfigError

    with pytest.raises(ConfigError, match="eval.feature_extractor"):
        load_clip_extractor(arch, str(tmp_path / "missing.pt"))
