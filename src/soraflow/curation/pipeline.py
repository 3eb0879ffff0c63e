"""Curate one source file: probe, one decode pass with scene cuts, then per clip caption,
filters, scores and encoding. Idempotent and cached by content hash.

The result of a source is a folder ``<work_root>/<key>/`` holding ``kept.parquet`` (rows of
kept clips), ``rejected.parquet`` (rows of the source or clips it dropped), ``clips/<id>.mp4``
(or ``.png`` for stills), ``thumbs/<id>.png`` (a 3-frame strip per clip, for the sample grid)
and ``source.json`` (probe, decode and timing facts). It is written under a temporary name and
renamed when complete, so a folder that exists is finished: a killed run leaves at most
``.tmp-*`` folders, which the next run ignores and deletes, and redoes only missing keys.
``key`` = hash(content sha256, the settings that change the result, the manifest caption).

Memory: a scene's decoded frames are buffered (YUV at the clip size, at most
``clips.max_seconds`` of them) until the detector confirms its end, because the scorers' frame
choice depends on the clip length; frames beyond ``max_seconds`` only feed the detector. Only
the sampled frames are converted to RGB (for the scorers and the thumbnail strip); the clip is
encoded from the decoded frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from soraflow.curation import captions as cap
from soraflow.curation.config import CurateConfig
from soraflow.curation.decode import DecodedFrame, FrameReader, even_size
from soraflow.curation.encode import encode_clip, thumb_size, thumbnail_strip, write_image
from soraflow.curation.filters import Rejection, caption_rules, score_rules, shape_rules
from soraflow.curation.inputs import SourceItem
from soraflow.curation.probe import ProbeError, ProbeInfo, probe_media
from soraflow.curation.scenes import SceneCutter

log = logging.getLogger(__name__)

DONE_FILE = "source.json"
KEPT_FILE = "kept.parquet"
REJECTED_FILE = "rejected.parquet"


# ----------------------------------------------------------------------------- identities
def source_key(sha256: str, config: CurateConfig, text: str | None) -> str:
    """Cache key of a source's work folder (content, result-changing settings, manifest caption)."""
    h = hashlib.sha256()
    h.update(sha256.encode())
    h.update(config.processing_key().encode())
    h.update(("" if text is None else "text:" + text).encode())
    return f"{sha256[:16]}-{h.hexdigest()[:12]}"


def clip_id(sha256: str, start: int, end: int) -> str:
    """Stable clip id: hash of the source content and the clip's source frame range."""
    return hashlib.sha256(f"{sha256}:{start}:{end}".encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------- scorers
@lru_cache(maxsize=4)
def _scorers_for(scores_json: str):
    from soraflow.curation.scores.config import ScoresConfig
    from soraflow.curation.scores.scorers import load_scorers

    t0 = time.perf_counter()
    scorers = load_scorers(ScoresConfig.model_validate_json(scores_json))
    log.info("scorers loaded in %.1f s (pid %d); missing: %s", time.perf_counter() - t0, os.getpid(), scorers.missing)
    return scorers


_SCORERS_LOCK = threading.Lock()


def get_scorers(config: CurateConfig):
    """The scorers of ``config.scores``, loaded once per process (cached by the config's JSON).

    The lock makes worker threads of one process wait for the first load instead of each
    loading the models again.
    """
    with _SCORERS_LOCK:
        return _scorers_for(config.scores.model_dump_json())



# ----------------------------------------------------------------------------- the work
@dataclass
class _Scene:
    start: int
    frames: list[DecodedFrame] = field(default_factory=list)
    full: bool = False  # reached clips.max_seconds: later frames of the scene are dropped


@dataclass
class SourceCurator:
    """Curates one source into a folder; see the module docstring. Use :func:`curate_source`."""

    item: SourceItem
    sha256: str
    config: CurateConfig
    out_dir: Path
    kept: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("probe", "decode_detect", "caption", "score", "encode"), 0.0))
    skipped_filters: dict[str, int] = field(default_factory=dict)
    _made_dirs: set[str] = field(default_factory=set)

    # -- rows
    def _reject(self, stage: str, rule: str, reason: str, clip: dict[str, Any] | None = None) -> None:
        row = {"source_path": self.item.path, "source_sha256": self.sha256, "stage": stage, "rule": rule, "reason": reason}
        if clip:
            row.update({k: v for k, v in clip.items() if k not in row})
        self.rejected.append(row)

    def _subdir(self, name: str) -> Path:
        """``out_dir / name``, created on first use (once per source, not once per clip)."""
        d = self.out_dir / name
        if name not in self._made_dirs:
            d.mkdir(exist_ok=True)
            self._made_dirs.add(name)
        return d

    def _scorers(self):
        scorers = get_scorers(self.config)
        self.facts["missing_scores"] = dict(scorers.missing)
        return scorers

    def run(self) -> None:
        t0 = time.perf_counter()
        try:
            info = probe_media(self.item.path)
        except ProbeError as err:
            self.timings["probe"] = time.perf_counter() - t0
            self._reject("probe", "unreadable", str(err))
            return
        self.timings["probe"] = time.perf_counter() - t0
        self.facts["probe"] = info.as_dict()
        self.sidecar = cap.read_sidecar(self.item.path) if self.config.captions.use_sidecar else []
        self._decode_and_cut(info)

    # -- decode pass
    def _decode_and_cut(self, info: ProbeInfo) -> None:
        cfg = self.config
        disp_w, disp_h = (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)
        out_size = even_size(disp_w, disp_h, cfg.clips.max_short_side)
        is_video = info.kind == "video"
        fps = info.fps if is_video else math.nan
        reader = FrameReader(self.item.path, out_size, cfg.scenes.detect_width if is_video else None, info.rotation)
        self._out_size = out_size
        cutter = SceneCutter(cfg.scenes, fps) if is_video else None
        max_frames = max(1, int(math.floor(cfg.clips.max_seconds * fps + 1e-6))) if is_video else 1
        # With timestamps, a scene is truncated where its frames' time says, not at a count of
        # frames at the header's rate: variable-rate sources and AVIs with dropped frames hold
        # fewer (or more) frames per second than that rate. The last frame kept starts at most
        # one header frame period before max_seconds (for a constant rate: max_frames frames).
        max_start = cfg.clips.max_seconds - 1.0 / fps if is_video else 0.0
        pending: deque[DecodedFrame] = deque()
        scene = _Scene(0)
        lag = cutter.lag if cutter else 0

        def commit(f: DecodedFrame) -> None:
            if scene.full:
                return
            if scene.frames:  # a scene keeps at least its first frame (a still image only that)
                first = scene.frames[0].pts_seconds
                elapsed = f.pts_seconds - first if f.pts_seconds is not None and first is not None else None
                if elapsed is not None and elapsed >= 0:
                    keep = elapsed <= max_start + 1e-6
                else:  # no timestamps, or they went back (reordered or reset): count frames
                    keep = len(scene.frames) < max_frames
                if not keep:
                    scene.full = True
                    return
            scene.frames.append(f)

        t0 = time.perf_counter()
        busy = 0.0  # time spent on clips inside the decode loop, not decode/detect
        last_index = -1
        for f in reader:
            last_index = f.index
            if not is_video:
                commit(f)
                break
            cuts = cutter.push(f.index, f.small)
            f.small = None
            pending.append(f)
            for c in cuts:
                while pending and pending[0].index < c:
                    commit(pending.popleft())
                t1 = time.perf_counter()
                self._finish_scene(scene, c, info, fps)
                busy += time.perf_counter() - t1
                scene = _Scene(c)
            while len(pending) > lag:
                commit(pending.popleft())
        decoded = last_index + 1
        if cutter is not None:
            for c in cutter.finish():
                while pending and pending[0].index < c:
                    commit(pending.popleft())
                self._finish_scene(scene, c, info, fps)
                scene = _Scene(c)
        while pending:
            commit(pending.popleft())
        self.timings["decode_detect"] = time.perf_counter() - t0 - busy
        self.facts.update(
            decoded_frames=decoded,
            decode_error=reader.error,
            cuts=cutter.cuts if cutter else [],
            out_width=out_size[0],
            out_height=out_size[1],
        )
        if is_video and info.num_frames != decoded:
            log.info("%s: header says %d frames, decoded %d", self.item.path, info.num_frames, decoded)
        if decoded == 0:
            self._reject("decode", "no_frames", reader.error or "no frame could be decoded")
            return
        if scene.start < decoded:
            self._finish_scene(scene, decoded, info, fps)

    # -- one scene -> one clip
    def _finish_scene(self, scene: _Scene, end: int, info: ProbeInfo, fps: float) -> None:
        cfg = self.config
        start = scene.start
        frames = [f for f in scene.frames if f.index < end]
        scene.frames = []
        is_video = info.kind == "video"
        clip_end = start + len(frames)  # truncated scenes end at max_seconds
        cid = clip_id(self.sha256, start, clip_end)
        w, h = self._out_size
        if is_video:
            fps = scene_rate(frames, fps)
        row: dict[str, Any] = {
            "id": cid,
            "source_path": self.item.path,
            "source_sha256": self.sha256,
            "start_frame": start,
            "end_frame": clip_end,
            "scene_end_frame": end,
            "kind": info.kind,
            "num_frames": len(frames),
            "height": h,
            "width": w,
            "aspect_ratio": h / w if w else math.nan,
            "resolution": h * w,
            "fps": fps,
        }
        if is_video:
            seconds = (end - start) / fps
            if seconds + 1e-9 < cfg.clips.min_seconds:
                self._reject("scenes", "scene_too_short",
                             f"scene of {end - start} frames ({seconds:.2f} s) < clips.min_seconds {cfg.clips.min_seconds}",
                             row)
                return
        self._clip(row, frames, fps)

    def _clip(self, row: dict[str, Any], frames: list[DecodedFrame], fps: float) -> None:
        cfg = self.config
        is_video = row["kind"] == "video"
        self._subdir("thumbs")
        n = len(frames)
        tile = thumb_size(row["width"], row["height"])
        picks = [min(n - 1, int(round(p * (n - 1)))) for p in ((0.1, 0.5, 0.9) if n > 2 else (0.5,))]
        strip = [frames[i].rgb(tile) for i in picks]
        row["thumb"] = f"thumbs/{row['id']}.png"
        write_image(thumbnail_strip(strip), self.out_dir / row["thumb"], compress_level=1)  # a preview

        bad = shape_rules(row, cfg.filters)
        if bad:
            self._reject("filter", bad.rule, bad.reason, row)
            return

        # captions: manifest, sidecar, model
        t0 = time.perf_counter()
        text, source = None, None
        if cfg.captions.use_manifest and self.item.text and self.item.text.strip():
            text, source = self.item.text.strip(), "manifest"
        if text is None and self.sidecar:
            text = cap.best_overlap(self.sidecar, row["start_frame"], row["end_frame"])
            source = "sidecar" if text else None
        scorers = None
        if text is None and cfg.captions.use_model:
            scorers = self._scorers()
            mid = frames[n // 2].rgb()
            text = scorers and _caption_model(scorers, mid)
            source = "model" if text else None
        self.timings["caption"] += time.perf_counter() - t0
        row["text"] = text or ""
        row["caption_source"] = source
        if not text:
            self._reject("caption", "no_caption", "no caption", row)
            return
        bad = caption_rules(text, cfg.filters)
        if bad:
            self._reject("filter", bad.rule, bad.reason, row)
            return

        # scores on sampled frames
        t0 = time.perf_counter()
        from soraflow.curation.scores.sampling import sample_indices
        from soraflow.curation.scores.scorers import score_clip

        scorers = scorers or self._scorers()
        idx = sample_indices(n, fps, cfg.scores)
        try:
            scores = score_clip([frames[i].rgb() for i in idx], idx, fps, text, scorers, cfg.scores, num_frames=n)
        except Exception as err:  # a scorer failing on odd input must not stop the run
            self.timings["score"] += time.perf_counter() - t0
            log.warning("%s [%d, %d): scoring failed: %s", self.item.path, row["start_frame"], row["end_frame"], err)
            self._reject("score", "score_error", f"scoring failed: {type(err).__name__}: {str(err)[:160]}", row)
            return
        self.timings["score"] += time.perf_counter() - t0
        row.update(scores)
        result = score_rules(scores, cfg.filters, is_video)
        for rule in result.skipped:
            self.skipped_filters[rule] = self.skipped_filters.get(rule, 0) + 1
        if result.rejection:
            self._reject("filter", result.rejection.rule, result.rejection.reason, row)
            return

        # encode the kept clip
        t0 = time.perf_counter()
        self._subdir("clips")
        rel = f"clips/{row['id']}.{'mp4' if is_video else 'png'}"
        try:
            if is_video:
                rotated = frames[0].rotation % 360 != 0
                encode_clip([f.rgb() if rotated else f.frame for f in frames], fps, self.out_dir / rel, cfg.clips)
            else:
                write_image(frames[0].rgb(), self.out_dir / rel)
        except Exception as err:
            self.timings["encode"] += time.perf_counter() - t0
            self._reject("encode", "encode_error", f"writing the clip failed: {type(err).__name__}: {str(err)[:160]}", row)
            return
        self.timings["encode"] += time.perf_counter() - t0
        row["clip_file"] = rel
        self.kept.append(row)

    def write(self) -> None:
        """Write the tables and ``source.json`` (last: its presence marks the folder complete)."""
        write_rows(self.kept, self.out_dir / KEPT_FILE)
        write_rows(self.rejected, self.out_dir / REJECTED_FILE)
        facts = {
            "source_path": self.item.path,
            "source_sha256": self.sha256,
            "manifest_text": self.item.text,
            "kept": len(self.kept),
            "rejected": len(self.rejected),
            "timings": self.timings,
            "skipped_filters": self.skipped_filters,
            **self.facts,
        }
        (self.out_dir / DONE_FILE).write_text(json.dumps(facts, indent=1, default=_json_default))


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Rows (dicts, keys may differ between rows) to a parquet file, through pyarrow directly.

    Column types are inferred per column (ints with None stay ints with nulls); pandas'
    DataFrame round trip cost 3x as much, a few ms per source file.
    """
    columns = list(dict.fromkeys(k for row in rows for k in row))
    pq.write_table(pa.table({c: [row.get(c) for row in rows] for c in columns}), path)


def read_rows(path: Path) -> pd.DataFrame:
    """A table written by :func:`write_rows`, as a DataFrame (ints with nulls become floats).

    One small file: ``ParquetFile.read`` without threads costs a third of ``read_table``.
    """
    with pq.ParquetFile(path) as f:
        return f.read(use_threads=False).to_pandas(use_threads=False)


def scene_rate(frames: list[DecodedFrame], header_fps: float, tolerance: float = 0.1) -> float:
    """The clip's frame rate: the header's, unless the frames' timestamps say otherwise.

    Variable-frame-rate sources and AVIs with dropped (zero-size) frames decode fewer frames
    than the header's rate implies; their clips are written at the rate the timestamps show
    (frames over elapsed time), so a clip plays as long as its scene did in the source.
    """
    ts = [f.pts_seconds for f in frames]
    if len(ts) < 3 or any(t is None for t in ts):
        return header_fps
    span = ts[-1] - ts[0]
    if span <= 0:
        return header_fps
    rate = (len(ts) - 1) / span
    return rate if abs(rate / header_fps - 1.0) > tolerance else header_fps


def _caption_model(scorers, frame: np.ndarray) -> str | None:
    from soraflow.curation.scores.scorers import caption_frames

    try:
        return caption_frames([frame], scorers)
    except Exception as err:
        log.warning("captioner failed: %s", err)
        return None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return str(obj)


@dataclass(frozen=True)
class SourceOutcome:
    """What :func:`curate_source` did: where the result is and whether it was already there."""

    work_dir: str
    cached: bool
    kept: int
    rejected: int


def curate_source(item: SourceItem, sha256: str, config: CurateConfig, work_root: str | Path) -> SourceOutcome:
    """Curate one source into ``work_root/<key>`` unless that folder already exists (idempotent).

    Never raises for bad media: probe/decode/score/encode failures become rejected rows; an
    unexpected error is recorded as a rejected row of stage ``error``.
    """
    work_root = Path(work_root)
    key = source_key(sha256, config, item.text if config.captions.use_manifest else None)
    final = work_root / key
    if (final / DONE_FILE).is_file():
        facts = json.loads((final / DONE_FILE).read_text())
        return SourceOutcome(str(final), True, int(facts.get("kept", 0)), int(facts.get("rejected", 0)))
    work_root.mkdir(parents=True, exist_ok=True)
    tmp = work_root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        cur = SourceCurator(item, sha256, config, tmp)
        try:
            cur.run()
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as err:  # noqa: BLE001 - recorded, never fatal
            log.exception("unexpected error on %s", item.path)
            cur.kept.clear()
            shutil.rmtree(tmp / "clips", ignore_errors=True)
            cur._reject("error", "unexpected_error", f"{type(err).__name__}: {str(err)[:200]}")
        cur.write()
        if final.exists():  # a half-written folder of an older layout, or a concurrent twin
            shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SourceOutcome(str(final), False, len(cur.kept), len(cur.rejected))


def prune_work(work_root: str | Path, keep: set[str]) -> int:
    """Remove the finished source folders under ``work_root`` other than ``keep`` (their paths).

    Called after a run that assembled its tables: folders of sources no longer in the input, or
    of other curation settings, would otherwise pile up in a work folder that outlives its runs.
    Returns how many were removed.
    """
    root = Path(work_root)
    kept = {Path(p).resolve() for p in keep}
    n = 0
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and not p.name.startswith(".tmp-") and p.resolve() not in kept:
                shutil.rmtree(p, ignore_errors=True)
                n += 1
    return n


def clean_stale_tmp(work_root: str | Path) -> int:
    """Remove ``.tmp-*`` folders left by a killed run; returns how many were removed."""
    root = Path(work_root)
    n = 0
    if root.is_dir():
        for p in root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n
