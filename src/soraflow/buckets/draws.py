"""Counter-based random numbers: a uniform draw is a pure function of its inputs.

The original seeds one ``numpy`` Generator per clip and bucket (``seed + epoch + i *
num_buckets + bucket_id``), which needs a Python loop per clip (16 processes for a large
table). Here a draw is a SplitMix64 hash of ``(purpose, seed, epoch, clip id, bucket index)``
computed over whole ``uint64`` arrays at once: any rank, any worker and any resumed run gets
the same number for the same clip, and a million draws cost a few milliseconds. The stream
differs from the original's (it cannot be reproduced vectorised); the semantics (a fresh,
independent uniform per clip, bucket and epoch) are the same.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["PURPOSE_CLIP_SEED", "PURPOSE_KEEP", "clip_keys", "hash_u64", "uniform"]

#: Purpose tags, so that two uses of the same (seed, epoch, clip) never share a stream.
PURPOSE_KEEP = 0x4B454550  # keep-probability draws of the bucket assignment
PURPOSE_CLIP_SEED = 0x434C4950  # the per-clip seed handed to the dataset (random start frame)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = (np.uint64(s) for s in (30, 27, 31, 11))


def _as_u64(x: object) -> np.ndarray:
    """Any integer (array or scalar, signed or not) as a 1-D ``uint64`` array, two's complement."""
    a = np.atleast_1d(np.asarray(x))
    if a.dtype == np.uint64:
        return a
    if a.dtype.kind in "iub":
        return a.astype(np.int64).view(np.uint64)
    raise TypeError(f"expected integers, got dtype {a.dtype}")


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 step (Steele, Lea, Flood 2014): a bijective avalanche over 64 bits."""
    z = z + _GOLDEN
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def hash_u64(*parts: object) -> np.ndarray:
    """Hash integer parts (arrays broadcast together) into one ``uint64`` per element."""
    if not parts:
        raise ValueError("hash_u64 needs at least one part")
    with np.errstate(over="ignore"):
        h = _mix(_as_u64(parts[0]))
        for p in parts[1:]:
            h = _mix(h ^ _as_u64(p))
    return h


def uniform(*parts: object) -> np.ndarray:
    """A float64 in ``[0, 1)`` per element, from the top 53 bits of :func:`hash_u64`."""
    return (hash_u64(*parts) >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)


def clip_keys(df: pd.DataFrame, id_column: str = "id") -> np.ndarray:
    """The ``uint64`` key of each clip: its ``id`` column, or its row position when there is none.

    Integer ids are used as they are; other ids (strings, ...) are hashed with pandas'
    fixed-key ``hash_array``, which is the same in every process.
    """
    if id_column not in df.columns:
        return np.arange(len(df), dtype=np.uint64)
    ids = df[id_column]
    if ids.isna().any():
        raise ValueError(f"column {id_column!r} has missing values; clip ids must be set for every row")
    values = ids.to_numpy()
    if values.dtype.kind in "iub":
        return _as_u64(values)
    if values.dtype.kind == "f" and np.all(np.mod(values, 1) == 0):
        return _as_u64(values.astype(np.int64))
    return pd.util.hash_array(values.astype(str).astype(object))
