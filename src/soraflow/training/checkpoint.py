"""Checkpoint folders on disk: atomic writes, discovery, pruning. Pure file I/O, no training.

Layout of one checkpoint, ``DIR/checkpoints/step-00000020/``:

* ``model.safetensors``, ``ema.safetensors``: full fp32 weights;
* ``state.pt``: optimizer, scheduler, sampler position and RNG states of every rank, step;
  plain tensors, numbers, strings, lists and dicts only, read with
  ``torch.load(weights_only=True)``;
* ``config.json``: the train config and model config, for people;
* ``COMPLETE``: written last.

A checkpoint is written into ``.tmp-step-...`` next to its final place, every file is fsynced,
``COMPLETE`` is written, and the folder is renamed: the rename is the commit point. A run
killed half-way leaves a ``.tmp-*`` folder that discovery ignores and the next save removes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
TMP_PREFIX = ".tmp-"
_STEP_RE = re.compile(r"^step-(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoints_dir(output: str | Path) -> Path:
    return Path(output) / CHECKPOINTS


def checkpoint_step(path: str | Path) -> int | None:
    m = _STEP_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def is_complete(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and checkpoint_step(path) is not None and (path / COMPLETE).is_file()


def list_checkpoints(output: str | Path) -> list[Path]:
    """Complete checkpoints under ``output/checkpoints``, oldest first."""
    root = checkpoints_dir(output)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if is_complete(p)]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def latest_checkpoint(output: str | Path) -> Path | None:
    found = list_checkpoints(output)
    return found[-1] if found else None


def resolve_resume(resume: str, output: str | Path) -> Path | None:
    """``auto`` -> newest complete checkpoint or None; ``none`` -> None; else that folder."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest_checkpoint(output)
    path = Path(resume)
    if not is_complete(path):
        raise CheckpointError(f"train.resume: {path} is not a complete checkpoint folder (step-XXXXXXXX with {COMPLETE})")
    return path


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_folder(dest: Path, marker: dict[str, Any] | None = None) -> Iterator[Path]:
    """Yield a temp folder beside ``dest``; on success fsync, write ``COMPLETE``, rename to ``dest``.

    An existing ``dest`` (a re-run with ``resume: none``) is replaced after the new one is whole.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"{TMP_PREFIX}{dest.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        (tmp / COMPLETE).write_text(
            json.dumps({**(marker or {}), "files": {p.name: p.stat().st_size for p in files}}, indent=1)
        )
        for p in tmp.iterdir():
            if p.is_file():
                _fsync_path(p)
        _fsync_path(tmp)
        old = None
        if dest.exists():
            old = dest.parent / f"{TMP_PREFIX}old-{dest.name}-{uuid.uuid4().hex[:8]}"
            os.rename(dest, old)
        os.rename(tmp, dest)  # the commit point
        _fsync_path(dest.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temp(output: str | Path) -> None:
    """Delete ``.tmp-*`` folders left by a killed writer (only one writer per output)."""
    for root in (checkpoints_dir(output), Path(output)):
        if root.is_dir():
            for p in root.iterdir():
                if p.name.startswith(TMP_PREFIX) and p.is_dir():
                    log.info("removing half-written %s", p)
                    shutil.rmtree(p, ignore_errors=True)


def assert_finite(state_dict: dict[str, torch.Tensor], what: str) -> None:
    for name, t in state_dict.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"refusing to save {what}: {name} holds NaN/inf values")


def _cpu_copy(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies (safetensors refuses shared or strided storage)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}


def write_weights(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """A safetensors file whose bytes depend only on the tensors and ``metadata``."""
    with open(path, "wb") as f:
        f.write(sorted_metadata(save(_cpu_copy(state_dict), metadata=metadata)))


def sorted_metadata(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its ``__metadata__`` keys in sorted order.

    safetensors writes the metadata from a Rust ``HashMap``, whose order is drawn afresh for
    every map: the same weights with two metadata keys (``step``, ``format``) came out as two
    different files, so DVC saw a new model folder whenever training ran again. The sorted JSON object
    has the same length, so the header keeps its size and every tensor its offset."""
    size = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + size]
    meta = json.loads(header).get("__metadata__")
    if not meta or len(meta) < 2:
        return data
    start = header.find(b'"__metadata__":') + len(b'"__metadata__":')
    end = start + len(json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode())
    canonical = json.dumps(dict(sorted(meta.items())), separators=(",", ":"), ensure_ascii=False).encode()
    if start < len(b'"__metadata__":') or json.loads(header[start:end]) != meta or len(canonical) != end - start:
        return data  # not the layout safetensors writes: leave the file as it is
    return data[: 8 + start] + canonical + data[8 + end :]


def save_checkpoint(
    output: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor] | None,
    train_state: dict[str, Any],
    config: dict[str, Any],
) -> Path:
    """Write ``output/checkpoints/step-XXXXXXXX`` atomically; refuses NaN/inf weights."""
    assert_finite(model_state, f"checkpoint step {step}: model")
    if ema_state is not None:
        assert_finite(ema_state, f"checkpoint step {step}: EMA")
    remove_stale_temp(output)
    dest = checkpoints_dir(output) / checkpoint_name(step)
    meta = {"step": str(step), "format": "soraflow-train-1"}
    with atomic_folder(dest, {"step": step}) as tmp:
        write_weights(tmp / MODEL_FILE, model_state, meta)
        if ema_state is not None:
            write_weights(tmp / EMA_FILE, ema_state, meta)
        torch.save(train_state, tmp / STATE_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
    return dest


def load_train_state(path: str | Path) -> dict[str, Any]:
    """``state.pt`` of a checkpoint, never unpickling arbitrary objects."""
    return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)


def load_weights(path: str | Path, name: str = MODEL_FILE) -> dict[str, torch.Tensor]:
    return load_file(str(Path(path) / name))


def prune_checkpoints(output: str | Path, keep_last_k: int) -> list[Path]:
    """Delete all but the newest ``keep_last_k`` complete checkpoints (0 keeps all)."""
    if keep_last_k <= 0:
        return []
    found = list_checkpoints(output)
    doomed = found[:-keep_last_k]
    for p in doomed:
        # Rename first so a kill mid-delete never leaves a "complete" partial folder.
        trash = p.parent / f"{TMP_PREFIX}del-{p.name}-{uuid.uuid4().hex[:8]}"
        os.rename(p, trash)
        shutil.rmtree(trash, ignore_errors=True)
    return doomed
