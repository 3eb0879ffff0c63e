"""Per-clip scores of the curation stage (Open-Sora 1.1 part 5) and the fallback captioner.

Usage by the curation core, once per process then once per clip::

    scorers = load_scorers(cfg)                       # cfg: ScoresConfig (params curate.scores)
    idx = sample_indices(num_frames, fps, cfg)        # decode the clip once, keep these frames
    row = score_clip(frames, idx, fps, caption, scorers, cfg)
    caption = caption_frames(frames, scorers)         # None when no captioner is configured
    scorers.missing                                   # {"aesthetic": "why it is empty", ...}

Columns (:data:`SCORE_COLUMNS`), all measured on the sampled frames only:

``motion``
    Dense optical flow (OpenCV DIS ultrafast by default; Farneback; torchvision RAFT when
    its weights are given) between ``flow_pairs`` pairs of frames ``flow_gap`` frames apart,
    at 10%..90% of the clip, on luma frames resized so the short side is 256 px (long
    side capped at 512, multiples of 8). Per pair: mean over pixels of the flow magnitude,
    divided by the frame gap; ``motion`` is the mean over pairs, in **pixels per frame at the
    256-px working size**. It does not depend on the clip's resolution nor on the gap between
    sampled frames. A pair where (almost) no pixel changed (< 0.2% of pixels by >= 2 grey
    levels, in luma and along the pair's main colour axis) counts as 0: flow estimators
    invent motion on flat areas from a few re-coded pixels. NaN for a 1-frame clip. (The
    original averaged |u| and |v| of UniMatch flow at 320x576 over frames 0/10/20/30,
    without dividing by the gap.)
``motion_p90``
    Same, with the 90th percentile of the magnitude instead of the mean.
``camera_motion``, ``camera_dx``, ``camera_dy``, ``camera_zoom``
    static | pan | tilt | zoom | complex from the flow field of each pair (median translation,
    median radial rate, residual; flat areas vote "no motion"), majority vote over pairs;
    camera_dx/dy/zoom are px per frame at the working size; see :mod:`.motion`.
``ocr_boxes``, ``ocr_area``
    PP-OCRv4 DB text detector (rapidocr-onnxruntime's ONNX weights) on ``ocr_frames`` frames
    resized to a 320-px long side; boxes with confidence > 0.3 (as the original) and
    elongated like text (long/short side >= 2; the detector also fires on solid blobs); max
    over frames of the box count and of the fraction of the frame covered by the boxes.
``aesthetic``
    open_clip image embedding (L2-normalised) -> LAION improved-aesthetic-predictor MLP, mean
    over the frames at 10/50/90%. NaN with a reason unless ``clip_pretrained`` and
    ``aesthetic_head`` are configured.
``match``
    100 x cosine(CLIP text embedding of the caption, CLIP image embedding of the middle
    frame). NaN without ``clip_pretrained`` or without a caption.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Light imports only: ``soraflow.config`` imports ScoresConfig through this package, and
# loading params must not pull in torch/open_clip/onnxruntime. The rest loads on first use.
from soraflow.curation.scores.config import ScoresConfig
from soraflow.curation.scores.sampling import sample_indices

if TYPE_CHECKING:
    from soraflow.curation.scores.scorers import (
        SCORE_COLUMNS,
        Scorers,
        caption_frames,
        load_scorers,
        score_clip,
    )

_LAZY = {"SCORE_COLUMNS", "Scorers", "caption_frames", "load_scorers", "score_clip"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from soraflow.curation.scores import scorers

        return getattr(scorers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SCORE_COLUMNS",
    "Scorers",
    "ScoresConfig",
    "caption_frames",
    "load_scorers",
    "sample_indices",
    "score_clip",
]
