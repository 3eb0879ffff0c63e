"""Keep/reject rules on a clip's row; each rule is named (``rule``) and explains itself (``reason``).

Rules run in three groups so that cheap ones go first and expensive work (scoring,
encoding) is skipped for clips already rejected: :func:`shape_rules` (frames, size, aspect),
:func:`caption_rules` (caption length), :func:`score_rules` (motion, OCR, aesthetic, match).
A ``None`` threshold disables its rule. A rule whose score is NaN (model not available)
rejects nothing: it is reported in ``skipped`` so the caller can log that it could not run.
Motion rules apply to videos only (a still image has no motion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from soraflow.curation.config import FiltersConfig


@dataclass(frozen=True)
class Rejection:
    rule: str
    reason: str


@dataclass
class RuleResult:
    rejection: Rejection | None = None
    skipped: list[str] = field(default_factory=list)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def shape_rules(row: dict[str, Any], f: FiltersConfig) -> Rejection | None:
    n, h, w = row["num_frames"], row["height"], row["width"]
    if f.min_frames is not None and n < f.min_frames:
        return Rejection("min_frames", f"{n} frames < min_frames {f.min_frames}")
    if f.max_frames is not None and n > f.max_frames:
        return Rejection("max_frames", f"{n} frames > max_frames {f.max_frames}")
    if f.min_side is not None and min(h, w) < f.min_side:
        return Rejection("min_side", f"shorter side {min(h, w)} px < min_side {f.min_side}")
    if f.min_resolution is not None and h * w < f.min_resolution:
        return Rejection("min_resolution", f"resolution {h}x{w}={h * w} < min_resolution {f.min_resolution}")
    ar = h / w
    if f.min_aspect_ratio is not None and ar < f.min_aspect_ratio:
        return Rejection("min_aspect_ratio", f"aspect ratio H/W {_fmt(ar)} < min_aspect_ratio {f.min_aspect_ratio}")
    if f.max_aspect_ratio is not None and ar > f.max_aspect_ratio:
        return Rejection("max_aspect_ratio", f"aspect ratio H/W {_fmt(ar)} > max_aspect_ratio {f.max_aspect_ratio}")
    return None


def caption_rules(text: str, f: FiltersConfig) -> Rejection | None:
    n = len(text.strip())
    if n == 0:
        return Rejection("empty_caption", "empty caption")
    if f.caption_min_chars is not None and n < f.caption_min_chars:
        return Rejection("caption_min_chars", f"caption of {n} chars < caption_min_chars {f.caption_min_chars}")
    if f.caption_max_chars is not None and n > f.caption_max_chars:
        return Rejection("caption_max_chars", f"caption of {n} chars > caption_max_chars {f.caption_max_chars}")
    return None


def _checks(f: FiltersConfig, is_video: bool) -> list[tuple[str, str, float | None, str]]:
    """``(rule, column, threshold, "min"|"max")`` of every score rule."""
    checks: list[tuple[str, str, float | None, str]] = []
    if is_video:
        checks += [("motion_min", "motion", f.motion_min, "min"), ("motion_max", "motion", f.motion_max, "max")]
    checks += [
        ("ocr_boxes_max", "ocr_boxes", f.ocr_boxes_max, "max"),
        ("ocr_area_max", "ocr_area", f.ocr_area_max, "max"),
        ("aesthetic_min", "aesthetic", f.aesthetic_min, "min"),
        ("match_min", "match", f.match_min, "min"),
    ]
    return checks


def score_rules(scores: dict[str, Any], f: FiltersConfig, is_video: bool) -> RuleResult:
    out = RuleResult()
    for rule, col, thr, kind in _checks(f, is_video):
        if thr is None:
            continue
        val = scores.get(col)
        if val is None or (isinstance(val, float) and math.isnan(val)):
            out.skipped.append(rule)
            continue
        val = float(val)
        if kind == "min" and val < thr:
            out.rejection = out.rejection or Rejection(rule, f"{col} {_fmt(val)} < {rule} {thr}")
        if kind == "max" and val > thr:
            out.rejection = out.rejection or Rejection(rule, f"{col} {_fmt(val)} > {rule} {thr}")
    return out
