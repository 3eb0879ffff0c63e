"""Scene cuts with PySceneDetect, fed frame by frame from our own PyAV decode.

There is no ffmpeg binary here, and we decode each source exactly once, so instead of
``SceneManager`` + a video backend we call the detector's ``process_frame`` directly on
downscaled BGR frames (the same calls ``SceneManager`` makes). A cut is reported as the
index of the first frame of the new scene; detectors report cuts a few frames late
(:attr:`SceneCutter.lag`), which the caller must allow for before committing frames to a scene.
"""

from __future__ import annotations

import math

import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detectors import AdaptiveDetector, ContentDetector

from soraflow.curation.config import ScenesConfig


class SceneCutter:
    """Streaming scene-cut detection over consecutive frames of one source.

    ``push(index, bgr)`` returns the cuts confirmed so far (frame indices, ascending);
    ``finish()`` returns any remaining ones. Frame indices are decode order, so a variable
    frame-rate source is cut on frames, not timestamps.
    """

    def __init__(self, config: ScenesConfig, fps: float):
        self.fps = float(fps) if math.isfinite(fps) and fps > 0 else 25.0
        min_len = max(1, int(round(config.min_scene_seconds * self.fps)))
        if config.detector == "adaptive":
            self.detector = AdaptiveDetector(
                adaptive_threshold=config.adaptive_threshold,
                min_scene_len=min_len,
                window_width=config.window_width,
                min_content_val=config.min_content_val,
            )
        else:
            self.detector = ContentDetector(threshold=config.content_threshold, min_scene_len=min_len)
        self.lag = int(self.detector.event_buffer_length) + 1
        self._last = -1
        self._cuts: list[int] = []

    def push(self, index: int, bgr: np.ndarray) -> list[int]:
        tc = FrameTimecode(index, fps=self.fps)
        self._last = index
        return self._accept(self.detector.process_frame(tc, bgr))

    def finish(self) -> list[int]:
        if self._last < 0:
            return []
        return self._accept(self.detector.post_process(FrameTimecode(self._last, fps=self.fps)))

    def _accept(self, cuts) -> list[int]:
        new = []
        for c in cuts or []:
            idx = int(c.frame_num)
            if idx > 0 and (not self._cuts or idx > self._cuts[-1]):
                self._cuts.append(idx)
                new.append(idx)
        return new

    @property
    def cuts(self) -> list[int]:
        return list(self._cuts)


def scene_ranges(num_frames: int, cuts: list[int]) -> list[tuple[int, int]]:
    """``[(start, end_exclusive), ...]`` covering ``0..num_frames`` split at ``cuts``."""
    bounds = [0] + [c for c in sorted(set(cuts)) if 0 < c < num_frames] + [num_frames]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
