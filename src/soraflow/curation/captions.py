"""Captions for clips: the input manifest's ``text``, a sidecar JSON, or a captioning model.

A sidecar is ``<media file>.json`` beside the media file (the demo corpus writes them):
``{"scenes": [{"start_frame": 0, "end_frame": 48, "caption": "..."}]}`` with source frame
ranges, end exclusive. A clip takes the caption of the sidecar scene it overlaps most
(ties: the earlier scene), so a scene detected a frame or two off still gets its own caption.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SidecarScene:
    start_frame: int
    end_frame: int
    caption: str


def sidecar_path(media: str | Path) -> Path:
    media = Path(media)
    return media.with_name(media.name + ".json")


def read_sidecar(media: str | Path) -> list[SidecarScene]:
    """Scenes of ``<media>.json``; ``[]`` when there is none or it is unreadable (logged)."""
    p = sidecar_path(media)
    if not p.is_file():
        return []
    try:
        data = json.loads(p.read_text())
        scenes = [
            SidecarScene(int(s["start_frame"]), int(s["end_frame"]), str(s.get("caption") or ""))
            for s in data.get("scenes", [])
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        log.warning("ignoring unreadable caption sidecar %s: %s", p, err)
        return []
    return [s for s in scenes if s.caption.strip()]


def best_overlap(scenes: list[SidecarScene], start: int, end: int) -> str | None:
    """Caption of the scene with the largest overlap with ``[start, end)``; None if none overlaps."""
    best, best_len = None, 0
    for s in scenes:
        overlap = min(end, s.end_frame) - max(start, s.start_frame)
        if overlap > best_len:
            best, best_len = s.caption, overlap
    return best
