"""Load every scoring model once per process and score one clip from its sampled frames."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from soraflow.config_base import ConfigError
from soraflow.curation.scores import sampling
from soraflow.curation.scores.captioner import Captioner
from soraflow.curation.scores.clip_scores import ClipScorer
from soraflow.curation.scores.config import ScoresConfig
from soraflow.curation.scores.motion import FlowEstimator, load_raft, motion_scores
from soraflow.curation.scores.ocr import TextDetector, ocr_scores

log = logging.getLogger(__name__)

# Columns returned by score_clip, with their type. Floats are NaN when not computed, the
# label is None when the clip has a single frame, ocr_boxes is None when OCR is disabled.
SCORE_COLUMNS: dict[str, type] = {
    "motion": float,  # mean |flow| per frame, px at the working size (short side 256)
    "motion_p90": float,  # mean over pairs of the 90th percentile of |flow| per frame
    "camera_motion": str,  # static | pan | tilt | zoom | complex
    "camera_dx": float,  # median horizontal flow per frame (+ = content moves right)
    "camera_dy": float,  # median vertical flow per frame (+ = content moves down)
    "camera_zoom": float,  # radial flow per frame at the mean radius (+ = zoom in)
    "ocr_boxes": int,  # max over OCR frames of the number of text boxes (conf > 0.3)
    "ocr_area": float,  # max over OCR frames of the fraction of the frame covered by boxes
    "aesthetic": float,  # LAION aesthetic MLP on CLIP embeddings, mean over 10/50/90% frames
    "match": float,  # 100 x CLIP cosine(caption, middle frame)
}


@dataclass
class Scorers:
    """Models loaded by :func:`load_scorers`; ``missing`` maps a score to why it is empty.

    Safe to share between threads of one process (inference only); with process pools each
    worker calls :func:`load_scorers` once.
    """

    config: ScoresConfig
    flow: FlowEstimator
    ocr: TextDetector | None = None
    clip: ClipScorer | None = None
    captioner: Captioner | None = None
    missing: dict[str, str] = field(default_factory=dict)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_scorers(config: ScoresConfig) -> Scorers:
    """Load every configured model once.

    A model that is not configured leaves its columns empty and gets a reason in ``missing``;
    a model that IS configured but cannot be loaded (file not found, hub id not cached, wrong
    shapes) raises :class:`ConfigError` naming the key, since silently dropping a score the
    user asked for would be worse.
    """
    device = resolve_device(config.device)
    missing: dict[str, str] = {}

    raft = None
    if config.flow_method == "raft":
        try:
            raft = load_raft(str(config.raft_weights), config.raft_arch, device)
        except FileNotFoundError as err:
            raise ConfigError(str(err)) from None
        except Exception as err:  # noqa: BLE001 - wrong state dict, wrong arch, ...
            raise ConfigError(
                f"curate.scores.raft_weights: cannot load {config.raft_weights} into {config.raft_arch}: {err}"
            ) from err
    flow = FlowEstimator(config, raft=raft, device=device)

    ocr = None
    if config.ocr_frames > 0:
        ocr = TextDetector(config)
    else:
        missing["ocr"] = "curate.scores.ocr_frames is 0: OCR disabled"

    clip = None
    if config.clip_pretrained:
        clip = ClipScorer.load(config.clip_model, config.clip_pretrained, config.aesthetic_head, device)
        if clip.head is None:
            missing["aesthetic"] = (
                "curate.scores.aesthetic_head is not set: no LAION aesthetic MLP configured"
            )
    else:
        reason = "curate.scores.clip_pretrained is not set: no pretrained CLIP weights configured"
        missing["aesthetic"] = reason
        missing["match"] = reason

    captioner = None
    if config.captioner:
        captioner = Captioner.load(config.captioner, device, config.caption_max_new_tokens, config.caption_prompt)
    else:
        missing["caption"] = "curate.scores.captioner is not set: no image-to-text model configured"

    for key, why in missing.items():
        log.info("score %s unavailable: %s", key, why)
    return Scorers(config=config, flow=flow, ocr=ocr, clip=clip, captioner=captioner, missing=missing)


def _check_frames(frames: np.ndarray | list[np.ndarray], indices: list[int]) -> list[np.ndarray]:
    seq = list(frames)
    if len(seq) != len(indices):
        raise ValueError(f"got {len(seq)} frames for {len(indices)} indices")
    if any(b <= a for a, b in zip(indices, indices[1:])):
        raise ValueError("indices must be strictly increasing")
    for f in seq:
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise ValueError(f"frames must be [H, W, 3] uint8 RGB, got {f.shape} {f.dtype}")
    return seq


def score_clip(
    frames: np.ndarray | list[np.ndarray],
    indices: list[int],
    fps: float,
    text: str | None,
    scorers: Scorers,
    config: ScoresConfig | None = None,
    num_frames: int | None = None,
) -> dict[str, Any]:
    """Every score of one clip (see :data:`SCORE_COLUMNS`).

    ``frames`` are the frames at ``indices`` (as returned by :func:`sample_indices`, or all
    frames), RGB uint8 at source size, in order. ``num_frames`` defaults to
    ``indices[-1] + 1``. ``text`` is the caption for ``match`` (NaN when None/empty).
    """
    del fps  # scores are per frame; kept in the signature for time-based policies
    config = config or scorers.config
    if len(indices) == 0:
        raise ValueError("score_clip needs at least one frame")
    seq = _check_frames(frames, list(indices))
    n = int(num_frames) if num_frames is not None else int(indices[-1]) + 1

    pairs = sampling.flow_pair_positions(indices, config, n)
    gaps = [indices[b] - indices[a] for a, b in pairs]
    row: dict[str, Any] = motion_scores(seq, pairs, gaps, scorers.flow, config)

    ocr_pos = sampling.ocr_positions(indices, config, n) if scorers.ocr is not None else []
    row.update(ocr_scores([seq[p] for p in ocr_pos], scorers.ocr))

    row["aesthetic"] = math.nan
    row["match"] = math.nan
    if scorers.clip is not None:
        aes_pos = sampling.clip_positions(indices, config, n)
        mid = sampling.middle_position(indices, n)
        all_pos = aes_pos + ([mid] if mid not in aes_pos else [])
        emb = scorers.clip.image_embeddings([seq[p] for p in all_pos])
        row["aesthetic"] = scorers.clip.aesthetic(emb[: len(aes_pos)])
        k = all_pos.index(mid)
        row["match"] = scorers.clip.match(emb[k : k + 1], text)
    return row


def caption_frames(frames: np.ndarray | list[np.ndarray], scorers: Scorers) -> str | None:
    """Caption of the middle frame by the configured captioner; None when none is configured."""
    if scorers.captioner is None:
        return None
    seq = list(frames)
    if not seq:
        return None
    return scorers.captioner.caption(np.ascontiguousarray(seq[len(seq) // 2]))
