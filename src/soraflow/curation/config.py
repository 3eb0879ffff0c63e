"""``curate`` section of params.yaml: inputs, scene cuts, clip encoding, scores, captions, filters.

Lengths are in seconds (converted to frames with each source's own frame rate). The original
Open-Sora 1.1 recipe drops scenes shorter than 2 s and truncates those longer than 15 s; the
demo corpus has scenes of 0.5-10+ s, so the demo defaults keep scenes from 0.5 s (set
``clips.min_seconds: 2.0`` to reproduce the original) and truncate at the original's 15 s.
A filter threshold left empty (``null``) does not filter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from soraflow.config_base import StrictModel
from soraflow.curation.scores.config import ScoresConfig


class ScenesConfig(StrictModel):
    """Scene-cut detection with PySceneDetect on downscaled frames."""

    #: ``adaptive`` (AdaptiveDetector, the original's choice) or ``content`` (ContentDetector).
    detector: Literal["adaptive", "content"] = "adaptive"
    #: AdaptiveDetector ``adaptive_threshold`` (the original uses 3.0).
    adaptive_threshold: float = Field(3.0, gt=0.0)
    #: AdaptiveDetector ``min_content_val``: the content change a cut needs at least.
    min_content_val: float = Field(15.0, ge=0.0)
    #: AdaptiveDetector rolling window (frames either side of the candidate).
    window_width: int = Field(2, ge=1, le=30)
    #: ContentDetector ``threshold`` (PySceneDetect's default 27).
    content_threshold: float = Field(27.0, gt=0.0)
    #: No two cuts closer than this (seconds). PySceneDetect's default is 15 frames (~0.6 s);
    #: the demo corpus has 0.5 s scenes, so the default is shorter.
    min_scene_seconds: float = Field(0.25, ge=0.0, le=60.0)
    #: Width the detector sees (frames are downscaled, keeping the aspect ratio); PySceneDetect
    #: itself downscales to ~256 px wide by default. ``0`` feeds full-size frames.
    detect_width: int = Field(128, ge=0, le=4096)


class ClipsConfig(StrictModel):
    """How scenes become clip files (H.264 mp4, or PNG for still images)."""

    #: Scenes shorter than this are dropped (the original: 2 s; the demo: 0.5 s).
    min_seconds: float = Field(0.5, ge=0.0, le=3600.0)
    #: Scenes longer than this are truncated to their first ``max_seconds`` (the original: 15 s).
    max_seconds: float = Field(15.0, gt=0.0, le=3600.0)
    #: Shorter side of the written clip is at most this (downscaled keeping the aspect, even sizes).
    max_short_side: int = Field(360, ge=16, le=4320)
    codec: Literal["libx264"] = "libx264"
    #: ultrafast at crf 23 against superfast (before), ``benchmarks/encode.py`` on the 160 demo
    #: videos and OpenCV's 4 sample videos: the same quality (Y-PSNR 54.0 vs 54.6 dB demo, 42.4
    #: vs 42.5 dB real footage), 40-48% less encoding CPU, clips that decode in 0.43-0.60x the
    #: CPU time (no CABAC, no deblocking; every reader of the dataset pays that), for files
    #: 1.33-1.36x larger. ``veryfast`` (the former default, at crf 20) writes files 0.37-0.39x
    #: the size for 2.4-2.8x the encoding CPU.
    preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
    ] = "ultrafast"
    crf: int = Field(23, ge=0, le=51)
    #: libx264 threads per clip; 0 = x264's own choice (1.5 x cores, frame threads). Curation
    #: already runs ``workers`` sources at a time, and on clips of a few hundred frames frame
    #: threads cost CPU time and compression (veryfast on the demo clips: 1 thread took 8% less
    #: CPU and gave 10% smaller files).
    threads: int = Field(1, ge=0, le=64)

    @model_validator(mode="after")
    def _lengths_ok(self) -> ClipsConfig:
        if self.min_seconds > self.max_seconds:
            raise ValueError(f"min_seconds {self.min_seconds} > max_seconds {self.max_seconds}")
        return self


class CaptionsConfig(StrictModel):
    """Where captions come from, in order: input manifest ``text``, sidecar JSON, captioner model."""

    use_manifest: bool = True
    #: Read ``<media file>.json`` sidecars (``{"scenes": [{"start_frame", "end_frame", "caption"}]}``).
    use_sidecar: bool = True
    #: Run ``scores.captioner`` (when configured) for clips that have no caption yet.
    use_model: bool = True


class FiltersConfig(StrictModel):
    """Keep/reject thresholds; ``null`` disables a filter. Scores are defined in the README."""

    min_frames: int | None = Field(1, ge=1)
    max_frames: int | None = Field(None, ge=1)
    #: Shorter side of the source frames, in pixels.
    min_side: int | None = Field(64, ge=1)
    #: ``resolution`` = height x width (pixel count), the original's ``resmin``.
    min_resolution: int | None = Field(None, ge=1)
    #: aspect_ratio = H/W bounds (the original buckets span about 0.25-4).
    min_aspect_ratio: float | None = Field(0.2, gt=0.0)
    max_aspect_ratio: float | None = Field(5.0, gt=0.0)
    #: Mean optical-flow magnitude (pixels at the scorer's working size); videos only.
    motion_min: float | None = Field(0.05, ge=0.0)
    motion_max: float | None = Field(None, ge=0.0)
    #: Text boxes on the sampled frames (max over frames) and fraction of the frame they cover.
    ocr_boxes_max: int | None = Field(0, ge=0)
    ocr_area_max: float | None = Field(None, ge=0.0, le=1.0)
    aesthetic_min: float | None = None
    match_min: float | None = None
    caption_min_chars: int | None = Field(1, ge=0)
    caption_max_chars: int | None = Field(1000, ge=1)

    @model_validator(mode="after")
    def _bounds_ok(self) -> FiltersConfig:
        pairs = [
            ("min_frames", "max_frames"),
            ("min_aspect_ratio", "max_aspect_ratio"),
            ("motion_min", "motion_max"),
            ("caption_min_chars", "caption_max_chars"),
        ]
        for lo, hi in pairs:
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} {a} > {hi} {b}")
        return self


class ValidationConfig(StrictModel):
    """great-expectations checks on ``clips.parquet``."""

    enabled: bool = True
    #: An output with fewer clips than this fails validation (an empty training set is an error).
    min_rows: int = Field(1, ge=0)
    #: Write great-expectations data docs (HTML) next to the JSON result.
    data_docs: bool = True


class CurateConfig(StrictModel):
    """The ``curate`` stage: folder or manifest in, ``clips.parquet`` + clip files out."""

    #: A folder (walked recursively) or a CSV/parquet manifest with ``path`` and optional ``text``.
    input: str = "data/demo/raw"
    output: str = "data/curated"
    #: Per-source results, the resume cache (null: ``<output>/.work``). Under DVC it lives outside
    #: the stage's output: DVC deletes an output before re-running its stage, so an interrupted
    #: ``dvc repro`` resumes only from a folder elsewhere, and the output's hash then depends on
    #: the curated clips and tables alone. Folders of sources or settings that a finished run did
    #: not use are removed after it.
    work_dir: str | None = None
    #: ``metrics.json`` (counts and timings) and ``validation/`` (great-expectations result and
    #: data docs, with their run ids) (null: ``<output>``). Kept apart from the clips and tables
    #: under DVC, so that re-running curation on the same videos leaves ``output`` byte for byte
    #: the same and DVC skips every later stage.
    report_dir: str | None = None
    scenes: ScenesConfig = ScenesConfig()
    clips: ClipsConfig = ClipsConfig()
    scores: ScoresConfig = ScoresConfig()
    captions: CaptionsConfig = CaptionsConfig()
    filters: FiltersConfig = FiltersConfig()
    validation: ValidationConfig = ValidationConfig()
    #: ``threads`` (Prefect ThreadPoolTaskRunner) or ``dask`` (prefect-dask DaskTaskRunner).
    task_runner: Literal["threads", "dask"] = "threads"
    #: Parallel source files (threads, or local Dask worker processes).
    workers: int = Field(2, ge=1, le=512)
    #: ``tcp://host:8786`` of a running Dask scheduler; empty starts a local cluster.
    dask_address: str | None = None
    #: Share of source contents (not clips) in the held-out split: exactly ``round(share x n)``
    #: of the n sources, chosen by content hash (``curation.tables.assign_splits``).
    heldout_fraction: float = Field(0.15, ge=0.0, le=1.0)

    def work_root(self) -> Path:
        """Where per-source results go (:attr:`work_dir`, or ``<output>/.work``)."""
        return Path(self.work_dir) if self.work_dir else Path(self.output) / ".work"

    def report_root(self) -> Path:
        """Where ``metrics.json`` and ``validation/`` go (:attr:`report_dir`, or ``output``)."""
        return Path(self.report_dir) if self.report_dir else Path(self.output)

    def processing_key(self) -> str:
        """JSON of the settings that change a source file's result (cache key of its work folder).

        Paths, parallelism, validation and the split are applied after per-file work, so
        changing them reuses finished files.
        """
        data = self.model_dump(
            mode="json", include={"scenes", "clips", "scores", "captions", "filters"}
        )
        return json.dumps(data, sort_keys=True)
