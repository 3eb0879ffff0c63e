"""Find the source files of a curation run: a folder walked recursively, or a manifest table.

A folder input yields every regular file except hidden ones and caption sidecars
(``<media file>.json`` next to an existing media file, read later as captions). Nothing is
filtered by extension: whether a file is media is decided by probing it, so a non-video file
ends up in ``rejected.parquet`` with a reason instead of being silently skipped.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class SourceItem:
    """One source file to curate; ``text`` is the manifest caption, if any."""

    path: str
    text: str | None = None


@dataclass(frozen=True)
class InputProblem:
    """An input row that cannot be processed at all (missing file, duplicate...)."""

    path: str
    reason: str
    rule: str


def is_sidecar(path: Path) -> bool:
    """``clip.mp4.json`` next to ``clip.mp4``: a caption sidecar, not a source."""
    return path.suffix.lower() == SIDECAR_SUFFIX and path.with_suffix("").is_file()


def discover_folder(folder: Path) -> list[SourceItem]:
    """Every non-hidden, non-sidecar file under ``folder``, sorted by path."""
    items = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if not p.is_file() or is_sidecar(p):
            continue
        items.append(SourceItem(path=str(p)))
    return items


def read_manifest(manifest: Path) -> list[SourceItem]:
    """Rows of a CSV/parquet manifest with a ``path`` column and an optional ``text`` column.

    Relative paths are taken relative to the manifest's folder when they exist there,
    else relative to the working directory (Open-Sora's CSVs hold absolute paths).
    """
    if manifest.suffix.lower() == ".csv":
        df = pd.read_csv(manifest)
    else:
        df = pd.read_parquet(manifest)
    if "path" not in df.columns:
        raise ValueError(f"{manifest}: manifest has no 'path' column (columns: {list(df.columns)})")
    items = []
    for row in df.itertuples(index=False):
        raw = str(getattr(row, "path"))
        p = Path(raw)
        if not p.is_absolute() and (manifest.parent / p).exists():
            p = manifest.parent / p
        text = getattr(row, "text", None) if "text" in df.columns else None
        if text is not None and (isinstance(text, float) and math.isnan(text)):
            text = None
        items.append(SourceItem(path=str(p), text=None if text is None else str(text)))
    return items


def discover_inputs(input_path: str | Path) -> list[SourceItem]:
    """The source items of ``input_path`` (a folder or a manifest file)."""
    p = Path(input_path)
    if p.is_dir():
        items = discover_folder(p)
    elif p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
        items = read_manifest(p)
    elif p.is_file():
        items = [SourceItem(path=str(p))]
    else:
        raise FileNotFoundError(f"curate input {str(p)!r} is neither a folder nor a file")
    log.info("found %d input files in %s", len(items), p)
    return items


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file (hex sha256): the identity of a source in ids, splits and caches."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def dedupe_sources(items: list[SourceItem]) -> tuple[list[tuple[SourceItem, str]], list[InputProblem]]:
    """Hash every item; drop missing files and exact duplicates (same content, kept once).

    Returns ``[(item, sha256), ...]`` for the files to process and the problems found.
    """
    keep: list[tuple[SourceItem, str]] = []
    problems: list[InputProblem] = []
    seen_paths: set[str] = set()
    seen_hash: dict[str, str] = {}
    for item in items:
        if item.path in seen_paths:
            problems.append(InputProblem(item.path, "listed twice in the manifest", "duplicate_path"))
            continue
        seen_paths.add(item.path)
        try:
            digest = file_sha256(item.path)
        except OSError as err:
            problems.append(InputProblem(item.path, f"cannot read file: {err.strerror or err}", "unreadable"))
            continue
        if digest in seen_hash:
            problems.append(
                InputProblem(item.path, f"same content as {seen_hash[digest]}", "duplicate_content")
            )
            continue
        seen_hash[digest] = item.path
        keep.append((item, digest))
    return keep, problems
