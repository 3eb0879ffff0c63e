"""Text detection with the PP-OCRv4 DB detector shipped inside ``rapidocr-onnxruntime``.

Only the detector runs (no angle classifier, no recogniser): the score needs boxes, not text.
The frame is resized so its short side is ``ocr_short_side`` px (192) and its long side at
most ``ocr_size`` (320) px (each side rounded to a multiple of 32, as the network needs): 16:9
frames get 192 x 320, square ones 192 x 192 (text scales with the frame's height, so a square
frame needs no more pixels than a 16:9 one to show its text at the same size; the model's cost
is proportional to the pixels). It is converted to BGR (PaddleOCR's training order) and
normalised to [-1, 1]; rapidocr's own DB post-processing turns the probability map into
boxes, kept when their mean probability is above ``ocr_box_threshold`` (0.3, the original's
confidence cut) and they are elongated like a line of text: long side / short side >=
``ocr_min_aspect`` (2.0). The last rule is ours: the DB detector fires with high confidence (0.8-0.9) on solid
blobs such as the demo's circles and squares, whose boxes are ~1:1; a word or a line of text
is at least ~2.5:1. Set it to 1.0 to count every box as the original did.

- ``ocr_boxes``: number of boxes on the frame;
- ``ocr_area``: fraction of the frame covered by the union of the boxes (0..1).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from soraflow.curation.scores.config import ScoresConfig

log = logging.getLogger(__name__)

DET_MODEL = "ch_PP-OCRv4_det_infer.onnx"


def detector_model_path() -> Path:
    import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).parent / "models" / DET_MODEL


def detector_input_size(height: int, width: int, long_side: int, short_side: int | None = None) -> tuple[int, int]:
    """``(h, w)`` of the detector input: aspect kept, long side ``long_side``, or short side
    ``short_side`` when that is smaller; both rounded to a multiple of 32 (at least 32)."""
    scale = long_side / max(1, max(height, width))
    if short_side is not None:
        scale = min(scale, short_side / max(1, min(height, width)))
    return max(32, int(round(height * scale / 32)) * 32), max(32, int(round(width * scale / 32)) * 32)


def box_aspect(box: np.ndarray) -> float:
    """Long side / short side of a 4-point box (ordered around its perimeter)."""
    a = float(np.linalg.norm(box[1] - box[0]))
    b = float(np.linalg.norm(box[2] - box[1]))
    return max(a, b) / max(min(a, b), 1e-6)


class TextDetector:
    """DB text detector; ``detect(rgb)`` -> (number of boxes, covered area fraction)."""

    def __init__(self, config: ScoresConfig) -> None:
        import onnxruntime as ort
        from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if config.ocr_threads > 0:
            opts.intra_op_num_threads = config.ocr_threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(detector_model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.long_side = config.ocr_size
        self.short_side = config.ocr_short_side
        self.min_aspect = config.ocr_min_aspect
        self.post = DBPostProcess(
            thresh=config.ocr_pixel_threshold,
            box_thresh=config.ocr_box_threshold,
            max_candidates=1000,
            unclip_ratio=1.6,
            score_mode="fast",
            use_dilation=True,
        )

    def boxes(self, rgb: np.ndarray) -> tuple[np.ndarray, list[float], tuple[int, int]]:
        """Boxes (``[K, 4, 2]`` int, in detector-input pixels), their scores, the input size."""
        h, w = detector_input_size(rgb.shape[0], rgb.shape[1], self.long_side, self.short_side)
        img = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
        x = img[..., ::-1].astype(np.float32) * (2.0 / 255.0) - 1.0
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        prob = self.session.run(None, {self.input_name: x})[0]
        boxes, scores = self.post(prob, (h, w))
        boxes = np.asarray(boxes).reshape(-1, 4, 2)
        keep = [i for i, b in enumerate(boxes) if box_aspect(b) >= self.min_aspect]
        return boxes[keep], [float(scores[i]) for i in keep], (h, w)

    def detect(self, rgb: np.ndarray) -> tuple[int, float]:
        boxes, _, (h, w) = self.boxes(rgb)
        if len(boxes) == 0:
            return 0, 0.0
        mask = np.zeros((h, w), dtype=np.uint8)
        cv2.fillPoly(mask, [b.astype(np.int32) for b in boxes], 1)
        return int(len(boxes)), float(mask.mean())


def ocr_scores(frames: list[np.ndarray], detector: TextDetector | None) -> dict[str, object]:
    """Max over ``frames`` of the box count and of the covered area; None when not run."""
    if detector is None or not frames:
        return {"ocr_boxes": None, "ocr_area": float("nan")}
    results = [detector.detect(f) for f in frames]
    return {"ocr_boxes": max(r[0] for r in results), "ocr_area": max(r[1] for r in results)}
