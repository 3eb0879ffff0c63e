"""aesthetic / match with a tiny open_clip model built here, saved to disk and loaded by path."""

from __future__ import annotations

import json
import math

import numpy as np
import open_clip
import pytest
import torch

from soraflow.config_base import ConfigError, parse_model
from soraflow.curation.scores import ScoresConfig, load_scorers, sample_indices, score_clip
from soraflow.curation.scores.clip_scores import AestheticMLP

ARCH = "soraflow-test-tiny-clip"
EMBED = 16
TINY_CFG = {
    "embed_dim": EMBED,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """Registers the tiny architecture; returns (weights file, local-dir folder, head file)."""
    root = tmp_path_factory.mktemp("clip")
    (root / f"{ARCH}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(root / f"{ARCH}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None)
    weights = root / "tiny_clip.pt"
    torch.save(model.state_dict(), weights)
    folder = root / "tiny_clip_dir"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": {}}))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    head = AestheticMLP(EMBED)
    with torch.no_grad():  # shift the output so it looks like an aesthetic score (~5)
        head.layers[7].bias.fill_(5.0)
    head_path = root / "head.pth"
    torch.save(head.state_dict(), head_path)
    return weights, folder, head_path, model


def _frames(n: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 48, 64, 3), dtype=np.uint8)


def _row(cfg: ScoresConfig, scorers, frames: np.ndarray, text: str | None) -> dict:
    idx = sample_indices(len(frames), 24.0, cfg)
    return score_clip(frames[idx], idx, 24.0, text, scorers, cfg)


def test_not_configured_gives_nan_and_reason():
    cfg = ScoresConfig(ocr_frames=0)
    scorers = load_scorers(cfg)
    row = _row(cfg, scorers, _frames(), "a red circle")
    assert math.isnan(row["aesthetic"]) and math.isnan(row["match"])
    assert "clip_pretrained" in scorers.missing["aesthetic"] and "clip_pretrained" in scorers.missing["match"]


def test_weights_file_and_head_load_and_score(tiny_clip):
    weights, _, head_path, model = tiny_clip
    cfg = ScoresConfig(ocr_frames=0, clip_model=ARCH, clip_pretrained=str(weights), aesthetic_head=str(head_path))
    scorers = load_scorers(cfg)
    assert "aesthetic" not in scorers.missing and "match" not in scorers.missing
    # the loaded weights are the saved ones, not a fresh random init
    loaded = scorers.clip.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())

    frames = _frames()
    row = _row(cfg, scorers, frames, "a red circle moving left")
    assert np.isfinite(row["aesthetic"]) and abs(row["aesthetic"] - 5.0) < 2.0
    assert -100.0 <= row["match"] <= 100.0
    again = _row(cfg, scorers, frames, "a red circle moving left")
    assert again["aesthetic"] == pytest.approx(row["aesthetic"], abs=1e-5)
    assert again["match"] == pytest.approx(row["match"], abs=1e-4)
    # match is 100 x cosine of the caption and the middle frame, computed independently here
    idx = sample_indices(len(frames), 24.0, cfg)
    mid = frames[idx[min(range(len(idx)), key=lambda i: abs(idx[i] - 0.5 * (len(frames) - 1)))]]
    from PIL import Image

    with torch.no_grad():
        im = scorers.clip.model.encode_image(scorers.clip.preprocess(Image.fromarray(mid))[None])
        tx = scorers.clip.model.encode_text(open_clip.get_tokenizer(ARCH)(["a red circle moving left"]))
    expected = 100.0 * torch.nn.functional.cosine_similarity(im, tx).item()
    assert row["match"] == pytest.approx(expected, abs=1e-3)
    # a different caption changes match, not aesthetic
    other = _row(cfg, scorers, frames, "zzz qqq")
    assert other["match"] != pytest.approx(row["match"], abs=1e-6)
    assert other["aesthetic"] == pytest.approx(row["aesthetic"], abs=1e-6)
    # no caption: no match
    assert math.isnan(_row(cfg, scorers, frames, None)["match"])


def test_local_dir_without_head_gives_match_and_aesthetic_reason(tiny_clip):
    _, folder, _, _ = tiny_clip
    cfg = ScoresConfig(ocr_frames=0, clip_pretrained=str(folder))
    scorers = load_scorers(cfg)
    row = _row(cfg, scorers, _frames(), "a blue square")
    assert np.isfinite(row["match"]) and math.isnan(row["aesthetic"])
    assert "aesthetic_head" in scorers.missing["aesthetic"]


def test_broken_configurations_raise_with_the_key(tiny_clip, tmp_path):
    weights, folder, head_path, _ = tiny_clip
    with pytest.raises(ConfigError, match="clip_pretrained"):
        load_scorers(ScoresConfig(ocr_frames=0, clip_pretrained=str(tmp_path / "nope.pt")))
    with pytest.raises(ConfigError, match="clip_pretrained"):
        load_scorers(ScoresConfig(ocr_frames=0, clip_pretrained="hf-hub:nobody/not-cached-anywhere"))
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG}))
    with pytest.raises(ConfigError, match="no weights"):  # never a randomly initialised CLIP
        load_scorers(ScoresConfig(ocr_frames=0, clip_pretrained=str(empty)))
    wide = tmp_path / "head768.pth"
    torch.save(AestheticMLP(768).state_dict(), wide)
    with pytest.raises(ConfigError, match="aesthetic_head"):
        load_scorers(ScoresConfig(ocr_frames=0, clip_model=ARCH, clip_pretrained=str(weights), aesthetic_head=str(wide)))
    with pytest.raises(ConfigError, match="aesthetic_head"):
        parse_model(ScoresConfig, {"aesthetic_head": str(head_path)}, "params.yaml")


def test_aesthetic_head_matches_the_public_state_dict_layout():
    keys = set(AestheticMLP(768).state_dict())
    expected = {f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}
    assert keys == expected
    shapes = {k: tuple(v.shape) for k, v in AestheticMLP(768).state_dict().items()}
    assert shapes["layers.0.weight"] == (1024, 768) and shapes["layers.7.weight"] == (1, 16)
