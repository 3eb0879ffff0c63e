"""Which frames of a clip the scorers look at, and which role each sampled frame plays.

The curation core decodes a clip once and hands :func:`score_clip` the frames listed by
:func:`sample_indices`. Roles are derived from the indices themselves (not from hidden state),
so the scorer also works when it is handed every frame of the clip:

- the clip length is ``indices[-1] + 1`` (``sample_indices`` always lists the last frame);
- flow pairs are consecutive sampled frames at most ``flow_gap`` apart, the pair nearest to
  each anchor at 10%..90% of the clip (away from the cut frames at the clip ends);
- CLIP frames are the sampled frames nearest to 10%..90% of the clip (10/50/90% for 3, as
  the original); the caption-match frame is the one nearest to 50%;
- OCR frames are the sampled frames nearest to the middle (1 frame) or 10%..90% (several).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from soraflow.curation.scores.config import ScoresConfig


def _fractions(k: int) -> list[float]:
    """``k`` positions spread over 10%..90% of a clip; a single one sits in the middle."""
    if k <= 0:
        return []
    if k == 1:
        return [0.5]
    return [float(f) for f in np.linspace(0.1, 0.9, k)]


def sample_indices(num_frames: int, fps: float, config: ScoresConfig) -> list[int]:
    """Sorted, unique frame indices (0-based, within the clip) the scorers need.

    Always contains the first and last frame (so the clip length can be read back), the flow
    pairs ``(a, a + gap)`` at anchors spread over 10%..90%, and the CLIP / OCR frames.
    ``fps`` is accepted for sampling policies in seconds; the current one works in frames.
    """
    del fps  # the sampling is defined in frames (see module docstring)
    n = int(num_frames)
    if n <= 0:
        return []
    if n == 1:
        return [0]
    out = {0, n - 1}
    gap = min(config.flow_gap, n - 1)
    for f in _fractions(config.flow_pairs):
        a = int(round(f * (n - 1 - gap)))
        out.update((a, a + gap))
    for f in _fractions(config.clip_frames) + _fractions(config.ocr_frames):
        out.add(int(round(f * (n - 1))))
    return sorted(out)


def _nearest(indices: Sequence[int], target: float) -> int:
    """Position in ``indices`` of the index nearest to ``target`` (first one on ties)."""
    arr = np.asarray(indices, dtype=np.float64)
    return int(np.argmin(np.abs(arr - target)))


def frame_positions(indices: Sequence[int], fractions: Sequence[float], num_frames: int) -> list[int]:
    """Positions (into ``indices``) of the sampled frames nearest to each clip fraction, unique."""
    out: list[int] = []
    for f in fractions:
        p = _nearest(indices, f * (num_frames - 1))
        if p not in out:
            out.append(p)
    return out


def flow_pair_positions(indices: Sequence[int], config: ScoresConfig, num_frames: int) -> list[tuple[int, int]]:
    """Positions ``(p, q)`` (into ``indices``) of the sampled frames used as flow pairs.

    Eligible pairs are 1..``flow_gap`` frames apart; for each anchor (as in
    :func:`sample_indices`) the eligible pair whose first frame is nearest is taken, the
    widest one on ties (so ``(a, a + gap)`` wins over ``(a, a + 1)`` when both were sampled).
    """
    n = num_frames
    if len(indices) < 2 or n < 2:
        return []
    eligible = [
        (p, q)
        for p in range(len(indices) - 1)
        for q in range(p + 1, min(len(indices), p + 1 + config.flow_gap))
        if 1 <= indices[q] - indices[p] <= config.flow_gap
    ]
    if not eligible:
        return []
    gap = min(config.flow_gap, n - 1)
    out: list[tuple[int, int]] = []
    for f in _fractions(config.flow_pairs):
        target = f * (n - 1 - gap)
        best = min(eligible, key=lambda pq: (abs(indices[pq[0]] - target), -(indices[pq[1]] - indices[pq[0]])))
        if best not in out:
            out.append(best)
    return out


def clip_positions(indices: Sequence[int], config: ScoresConfig, num_frames: int) -> list[int]:
    return frame_positions(indices, _fractions(config.clip_frames), num_frames)


def middle_position(indices: Sequence[int], num_frames: int) -> int:
    return _nearest(indices, 0.5 * (num_frames - 1))


def ocr_positions(indices: Sequence[int], config: ScoresConfig, num_frames: int) -> list[int]:
    return frame_positions(indices, _fractions(config.ocr_frames), num_frames)
