"""The output tables: ``clips.parquet`` and ``rejected.parquet``, assembled from per-source results.

``clips.parquet`` (one row per kept clip; Open-Sora column names first):

========================  =====================================================================
``path``                  the clip file, ``<output>/clips/<id>.mp4`` (``.png`` for still images),
                          as given by ``curate.output`` (relative to the working directory
                          when the output is relative, like DVC runs it)
``text``                  caption
``num_frames``            frames in the clip file
``height``, ``width``     clip file size in pixels (shorter side capped at ``clips.max_short_side``)
``aspect_ratio``          height / width
``fps``                   frame rate of the clip (the source's average rate; NaN for images)
``resolution``            height x width, the pixel count (Open-Sora's ``resolution`` column,
                          used by its ``resmin`` filter)
scores                    ``motion``, ``motion_p90``, ``camera_motion``, ``camera_dx``,
                          ``camera_dy``, ``camera_zoom``, ``ocr_boxes``, ``ocr_area``,
                          ``aesthetic``, ``match`` (see ``soraflow.curation.scores``)
``split``                 ``train`` or ``heldout`` (from the source's content hash)
``id``                    stable clip id: hash of source content + frame range
``source_path``           the input file; ``source_sha256`` its content hash
``start_frame``,          source frame range of the clip, end exclusive (decode order);
``end_frame``             ``scene_end_frame`` is the detected scene's end (larger when the
                          scene was truncated at ``clips.max_seconds``)
``kind``                  ``video`` or ``image``; ``caption_source``: manifest|sidecar|model
========================  =====================================================================

``rejected.parquet``: ``source_path``, ``start_frame``/``end_frame`` (null for whole files),
``stage`` (input, probe, decode, scenes, caption, filter, score, encode, error), ``rule`` (a
short name, counted in MLflow), ``reason`` (human-readable), plus whatever the clip had
(id, size, scores) when it got that far.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from soraflow.curation.inputs import InputProblem
from soraflow.curation.pipeline import DONE_FILE, KEPT_FILE, REJECTED_FILE, SourceOutcome, read_rows

log = logging.getLogger(__name__)

CLIPS_FILE = "clips.parquet"
REJECTED_TABLE = "rejected.parquet"

#: Columns of clips.parquet, in order.
CLIP_COLUMNS = [
    "path", "text", "num_frames", "height", "width", "aspect_ratio", "fps", "resolution",
    "motion", "motion_p90", "camera_motion", "camera_dx", "camera_dy", "camera_zoom",
    "ocr_boxes", "ocr_area", "aesthetic", "match",
    "split", "id", "source_path", "source_sha256", "start_frame", "end_frame", "scene_end_frame",
    "kind", "caption_source",
]
REJECTED_COLUMNS = [
    "source_path", "start_frame", "end_frame", "stage", "rule", "reason", "id", "source_sha256",
    "scene_end_frame", "kind", "num_frames", "height", "width", "fps", "text",
    "motion", "motion_p90", "camera_motion", "ocr_boxes", "ocr_area", "aesthetic", "match",
]
_INT_COLUMNS = ["num_frames", "height", "width", "resolution", "start_frame", "end_frame", "scene_end_frame"]
_FLOAT_COLUMNS = ["aspect_ratio", "fps", "motion", "motion_p90", "camera_dx", "camera_dy", "camera_zoom",
                  "ocr_area", "aesthetic", "match"]
_STR_COLUMNS = ["path", "text", "camera_motion", "split", "id", "source_path", "source_sha256", "kind",
                "caption_source", "stage", "rule", "reason"]


def split_unit(sha256: str) -> float:
    """A source content's place in ``[0, 1)``: a hash of the content hash, uniform and stable."""
    return int(hashlib.sha256(f"split:{sha256}".encode()).hexdigest()[:15], 16) / float(16**15)


def assign_splits(sha256s: Iterable[str], heldout_fraction: float) -> dict[str, str]:
    """``{content hash: "heldout" | "train"}``: the ``round(heldout_fraction * n)`` of the ``n``
    distinct source contents with the lowest :func:`split_unit` are held out (at least one when
    the fraction is above 0 and there are two or more sources).

    Every scene of one source lands in the same split, the split follows the content (not the
    path), and the held-out share is the one asked for. A threshold on each hash alone would keep
    a file's split independent of the others, but its share is a binomial draw: the demo corpus
    with objects of 0.35-0.45 of the shorter side had 9 of its 163 files under a 0.15 threshold
    (10 of the 153 sources with clips: 19 held-out clips, 13 held-out prompts). Here, adding or
    removing a file moves at most one other source across the cut.
    """
    distinct = sorted(set(sha256s), key=lambda s: (split_unit(s), s))
    n = len(distinct)
    k = min(n, int(round(heldout_fraction * n)))
    if heldout_fraction > 0 and k == 0 and n >= 2:
        k = 1
    return {s: ("heldout" if i < k else "train") for i, s in enumerate(distinct)}


def _typed(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    for col in columns:
        if col not in df.columns:
            df[col] = None
    for col in df.columns:
        if col in _INT_COLUMNS or col == "ocr_boxes":
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
        elif col in _FLOAT_COLUMNS:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
        elif col in _STR_COLUMNS:
            df[col] = df[col].astype("string")
    extra = [c for c in df.columns if c not in columns]
    return df[columns + extra]


@dataclass
class CurateTables:
    """The assembled tables, plus where each clip's thumbnail strip is (for the sample grid)."""

    clips: pd.DataFrame
    rejected: pd.DataFrame
    thumbs: dict[str, str] = field(default_factory=dict)
    sources: list[dict] = field(default_factory=list)


def _link(src: Path, dst: Path) -> None:
    """Hard-link (no copy) the finished clip into the output; copy across filesystems."""
    if dst.exists():
        if dst.stat().st_size == src.stat().st_size and dst.stat().st_ino == src.stat().st_ino:
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def assemble_tables(
    outcomes: list[SourceOutcome],
    problems: list[InputProblem],
    output: str | Path,
    heldout_fraction: float,
) -> CurateTables:
    """Collect per-source results into the output tables and ``<output>/clips/``; write both parquets.

    Rows are sorted by (source_path, start_frame), so the tables do not depend on the order
    in which workers finished. Files in ``<output>/clips/`` that no row refers to are removed.
    """
    output = Path(output)
    clips_dir = output / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    kept_parts, rej_parts, thumbs, sources = [], [], {}, []
    for oc in outcomes:
        wd = Path(oc.work_dir)
        sources.append(json.loads((wd / DONE_FILE).read_text()))
        kept = read_rows(wd / KEPT_FILE)
        rej = read_rows(wd / REJECTED_FILE)
        for df in (kept, rej):
            if "thumb" in df.columns:
                for cid, th in zip(df["id"], df["thumb"], strict=True):
                    if isinstance(th, str):
                        thumbs[str(cid)] = str(wd / th)
        if len(kept):
            paths = []
            for rel in kept["clip_file"]:
                dst = clips_dir / Path(rel).name
                _link(wd / rel, dst)
                paths.append(str(dst))
            kept = kept.assign(path=paths)
            kept_parts.append(kept)
        if len(rej):
            rej_parts.append(rej)
    for p in problems:
        rej_parts.append(pd.DataFrame([{"source_path": p.path, "stage": "input", "rule": p.rule, "reason": p.reason}]))

    clips = pd.concat(kept_parts, ignore_index=True) if kept_parts else pd.DataFrame()
    clips = clips.drop(columns=[c for c in ("thumb", "clip_file") if c in clips.columns])
    if len(clips):
        source_hashes = clips["source_sha256"].astype(str)
        clips["split"] = source_hashes.map(assign_splits(source_hashes, heldout_fraction))
    clips = _typed(clips, CLIP_COLUMNS).sort_values(["source_path", "start_frame"], kind="stable")
    clips = clips.reset_index(drop=True)

    rejected = pd.concat(rej_parts, ignore_index=True) if rej_parts else pd.DataFrame()
    rejected = rejected.drop(columns=[c for c in ("thumb", "clip_file") if c in rejected.columns])
    rejected = _typed(rejected, REJECTED_COLUMNS)
    rejected = rejected.sort_values(["source_path", "start_frame"], kind="stable", na_position="first")
    rejected = rejected.reset_index(drop=True)

    keep_names = {Path(p).name for p in clips["path"]}
    for f in clips_dir.iterdir():
        if f.is_file() and f.name not in keep_names:
            f.unlink()
    _write_parquet(clips, output / CLIPS_FILE)
    _write_parquet(rejected, output / REJECTED_TABLE)
    log.info("curated %d clips, rejected %d rows -> %s", len(clips), len(rejected), output)
    return CurateTables(clips, rejected, thumbs, sources)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def reason_counts(rejected: pd.DataFrame) -> dict[str, int]:
    """``{"stage.rule": count}`` of the rejected rows."""
    if rejected.empty:
        return {}
    keys = rejected["stage"].astype(str) + "." + rejected["rule"].astype(str)
    return {k: int(v) for k, v in keys.value_counts().sort_index().items()}
