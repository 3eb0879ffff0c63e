"""OCR score: the PP-OCR DB detector finds text rendered with Pillow, nothing on clean frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from soraflow.curation.scores import ScoresConfig, load_scorers, sample_indices, score_clip
from soraflow.curation.scores.ocr import TextDetector

CFG = ScoresConfig()


@pytest.fixture(scope="module")
def detector() -> TextDetector:
    return TextDetector(CFG)


def _frame(lines: list[str], size: tuple[int, int] = (400, 240), font_size: int = 22, blob: bool = False) -> np.ndarray:
    img = Image.new("RGB", size, (30, 90, 150))
    draw = ImageDraw.Draw(img)
    if blob:  # a solid disc: DB fires on it, the aspect rule must drop it
        draw.ellipse((size[0] // 2 - 40, 20, size[0] // 2 + 40, 100), fill=(240, 210, 40))
    font = ImageFont.load_default(size=font_size)
    for i, text in enumerate(lines):
        draw.text((20, size[1] - 40 - i * (font_size + 18)), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def test_counts_rendered_text_lines(detector):
    n, area = detector.detect(_frame(["SUMMER SALE TODAY"]))
    assert n == 1 and 0.01 < area < 0.2
    n2, area2 = detector.detect(_frame(["SUMMER SALE TODAY", "see you tomorrow"]))
    assert n2 == 2 and area2 > area


def test_clean_frames_have_no_text(detector):
    assert detector.detect(_frame([])) == (0, 0.0)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (240, 400, 3), dtype=np.uint8)
    assert detector.detect(noise)[0] == 0


def test_aspect_rule_is_what_drops_blobs():
    # at a 512-px input DB fires on the solid disc (0.8 confidence): only the aspect rule drops it
    big = CFG.model_copy(update={"ocr_size": 512, "ocr_short_side": None})
    assert TextDetector(big.model_copy(update={"ocr_min_aspect": 1.0})).detect(_frame([], blob=True))[0] == 1
    assert TextDetector(big).detect(_frame([], blob=True)) == (0, 0.0)
    assert TextDetector(big).detect(_frame(["GAME OVER"], blob=True))[0] == 1


def test_score_clip_reports_max_over_ocr_frames():
    cfg = CFG.model_copy(update={"ocr_frames": 3, "flow_pairs": 1})
    scorers = load_scorers(cfg)
    clean, text = _frame([]), _frame(["BREAKING NEWS"])
    frames = np.stack([clean] * 10 + [text] * 10)  # text only in the second half
    idx = sample_indices(len(frames), 25.0, cfg)
    row = score_clip(frames[idx], idx, 25.0, None, scorers, cfg)
    assert row["ocr_boxes"] == 1 and row["ocr_area"] > 0.01
    frames = np.stack([clean] * 20)
    row = score_clip(frames[idx], idx, 25.0, None, scorers, cfg)
    assert row["ocr_boxes"] == 0 and row["ocr_area"] == 0.0


def test_ocr_disabled_leaves_columns_empty_with_reason():
    cfg = CFG.model_copy(update={"ocr_frames": 0})
    scorers = load_scorers(cfg)
    frames = np.stack([_frame(["BREAKING NEWS"])] * 4)
    row = score_clip(frames, [0, 1, 2, 3], 25.0, None, scorers, cfg)
    assert row["ocr_boxes"] is None and math.isnan(row["ocr_area"])
    assert "ocr_frames" in scorers.missing["ocr"]
