"""Seeding and RNG state capture in a form ``torch.load(weights_only=True)`` reads back.

Python's and NumPy's states are tuples holding big ints and arrays; they are stored as int64
tensors and plain numbers, never as pickled objects.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device) with one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int, world_size: int) -> int:
    """Distinct per-rank seeds (DiT's ``seed * world_size + rank``)."""
    return seed * world_size + rank


def capture_rng(generators: dict[str, torch.Generator] | None = None, *, python_numpy: bool = True) -> dict[str, Any]:
    """This process's RNG states: Python, NumPy, torch CPU, CUDA (current device), generators.

    ``python_numpy=False`` leaves out Python's and NumPy's global generators. Training checkpoints
    do: the trainer never draws from them, while any library thread in the process may (an HTTP
    client's retry jitter, say), so their state at a checkpoint would make the same training
    write different bytes, and DVC see a new ``models/train``."""
    state: dict[str, Any] = {}
    if python_numpy:
        py_version, py_state, py_gauss = random.getstate()
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
        state["python"] = {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        }
        state["numpy"] = {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64).copy()),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        }
    state["torch"] = torch.get_rng_state()
    state["cuda"] = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    state["generators"] = {name: g.get_state() for name, g in (generators or {}).items()}
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng` (Python's and NumPy's states where ``state`` holds them, as
    checkpoints before stop 46 did); generators named in ``state`` must be in ``generators``."""
    if "python" in state:
        py = state["python"]
        random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if "numpy" in state:
        npst = state["numpy"]
        np.random.set_state(
            (
                npst["name"],
                npst["keys"].numpy().astype(np.uint32),
                npst["pos"],
                npst["has_gauss"],
                npst["cached_gaussian"],
            )
        )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    gens = generators or {}
    for name, gstate in state.get("generators", {}).items():
        if name not in gens:
            raise KeyError(f"checkpoint holds the state of generator {name!r}, which this run does not have")
        gens[name].set_state(gstate)
