"""The resumable distributed batch sampler: one epoch's batches are a pure function of (seed, epoch).

Per epoch (Open-Sora 1.1 ``VariableVideoBatchSampler``): assign every clip to a bucket
(:func:`soraflow.buckets.assign.assign_buckets`), group clips by (resolution, frames, aspect
ratio), shuffle inside each group, cut into the bucket's batch size (dropping the remainder
when ``drop_last``), shuffle the list of batches, and deal it round-robin to the ranks:
global batch ``g`` goes to rank ``g % num_replicas``, and every rank gets the same number.

Beyond the original (``buckets.rank_lockstep``, on by default): the batches are shuffled in
runs of ``num_replicas`` batches of one bucket, so at each step every rank trains the same
frame count and size. The original deals each rank a bucket of its own; a step then lasts as
long as its largest batch and the other ranks wait at the gradient all-reduce (on the demo's
2-rank CPU run, 960- and 1280-token batches side by side: lockstep trained ~6% faster on
average over three interleaved pairs of runs, README). A bucket's last ``len % num_replicas``
batches are shuffled together into mixed runs.

Resume state is ``(seed, epoch, position)``, ``position`` counting global batches already
consumed by all ranks together. The original rebuilt a resumed epoch with epoch-0 draws;
here the epoch's batch list is rebuilt from (seed, epoch, lockstep run length) alone, and the
state keeps the run length, so a resumed run (with any number of ranks) continues with exactly
the global batches the uninterrupted run had next; epochs after it use the new rank count.

``__iter__`` yields :class:`BucketBatch` lists of :class:`ClipRequest` (row position, target
size, per-clip seed); use the sampler as a DataLoader ``batch_sampler`` with a dataset that
takes a :class:`ClipRequest` as its index (:class:`soraflow.buckets.dataset.VideoClipDataset`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from soraflow.buckets.assign import assign_buckets
from soraflow.buckets.config import BucketsConfig
from soraflow.buckets.draws import PURPOSE_CLIP_SEED, clip_keys, hash_u64

__all__ = ["BucketBatch", "BucketKey", "BucketSampler", "ClipRequest", "EpochPlan", "plan_epoch"]

logger = logging.getLogger(__name__)

_PURPOSE_SHUFFLE = 0x53485546
_STATE_VERSION = 1


class BucketKey(NamedTuple):
    """A batch's bucket; ``aspect_ratio`` is the table key as a float (``"0.56"`` -> 0.56)."""

    resolution: str
    num_frames: int
    aspect_ratio: float
    height: int
    width: int


class ClipRequest(NamedTuple):
    """What the dataset needs to load one clip of a batch."""

    index: int  # row position in the sampler's table
    num_frames: int
    height: int
    width: int
    aspect_ratio: float
    seed: int  # per (seed, epoch, clip id): picks the random start frame


class BucketBatch(list):
    """A list of :class:`ClipRequest` of one bucket, plus that bucket's key.

    A ``list`` subclass so that a DataLoader fetches ``dataset[request]`` for each element.
    """

    def __init__(self, requests: list[ClipRequest], bucket: BucketKey, batch_size: int, global_index: int):
        super().__init__(requests)
        self.bucket = bucket
        self.batch_size = batch_size
        self.global_index = global_index

    @property
    def indices(self) -> list[int]:
        return [r.index for r in self]

    def __reduce__(self):  # pickles with its attributes (DataLoader workers)
        return (BucketBatch, (list(self), self.bucket, self.batch_size, self.global_index))


class EpochPlan(NamedTuple):
    """One epoch, global: the bucket of each group and each batch's (group, row positions)."""

    buckets: list[BucketKey]
    batch_sizes: list[int]
    batches: list[tuple[int, np.ndarray]]  # (group index, row positions), in dealing order
    assigned: pd.DataFrame  # the clip table with the epoch's bucket columns


def plan_epoch(
    assigned: pd.DataFrame, *, seed: int, epoch: int, shuffle: bool = True, drop_last: bool = True, lockstep: int = 1
) -> EpochPlan:
    """Group, shuffle, cut and order one epoch's batches; a pure function of its arguments.

    ``lockstep > 1`` orders the batches in runs of ``lockstep`` from one bucket (the module
    docstring); ``1`` is the original's order, batch by batch.
    """
    if lockstep < 1:
        raise ValueError(f"lockstep must be >= 1, got {lockstep}")
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative, got {seed}, {epoch}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([_PURPOSE_SHUFFLE, seed, epoch])))
    res = assigned["bucket_resolution"]
    if not isinstance(res.dtype, pd.CategoricalDtype):  # plain strings, e.g. read back from CSV
        res = res.astype("category")
    codes = res.cat.codes.to_numpy()
    categories = list(res.cat.categories)
    pos = np.flatnonzero(codes >= 0)
    t = assigned["bucket_num_frames"].to_numpy(dtype=np.int64, na_value=0)[pos]
    ar = assigned["bucket_aspect_ratio"].to_numpy(dtype=np.float64)[pos]
    h = assigned["bucket_height"].to_numpy(dtype=np.int64, na_value=0)[pos]
    w = assigned["bucket_width"].to_numpy(dtype=np.int64, na_value=0)[pos]
    bs = assigned["bucket_batch_size"].to_numpy(dtype=np.int64, na_value=0)[pos]
    rc = codes[pos]
    # Group order: resolution (visiting order), frames, aspect ratio; rows keep table order.
    order = np.lexsort((pos, ar, t, rc))
    pos, t, ar, h, w, bs, rc = (a[order] for a in (pos, t, ar, h, w, bs, rc))
    if len(pos):
        change = np.flatnonzero((np.diff(rc) != 0) | (np.diff(t) != 0) | (np.diff(ar) != 0)) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [len(pos)]])
    else:
        starts = ends = np.zeros(0, dtype=np.int64)
    buckets: list[BucketKey] = []
    sizes: list[int] = []
    batches: list[tuple[int, np.ndarray]] = []
    for g, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        buckets.append(BucketKey(str(categories[rc[s]]), int(t[s]), float(ar[s]), int(h[s]), int(w[s])))
        size = int(bs[s])
        sizes.append(size)
        members = pos[s:e]
        if shuffle:
            members = members[rng.permutation(len(members))]
        full = len(members) // size * size
        for i in range(0, full, size):
            batches.append((g, members[i : i + size]))
        if not drop_last and full < len(members):
            batches.append((g, members[full:]))
    if shuffle and batches:
        if lockstep == 1:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        else:
            batches = _lockstep_order(batches, lockstep, rng)
    return EpochPlan(buckets, sizes, batches, assigned)


def _lockstep_order(
    batches: list[tuple[int, np.ndarray]], run: int, rng: np.random.Generator
) -> list[tuple[int, np.ndarray]]:
    """Shuffle ``batches`` (grouped by bucket, each group already shuffled) in runs of ``run``
    consecutive batches of one bucket; each bucket's remainder joins mixed runs at random places."""
    runs: list[list[tuple[int, np.ndarray]]] = []
    rest: list[tuple[int, np.ndarray]] = []
    for _, group in itertools.groupby(batches, key=lambda b: b[0]):
        members = list(group)
        full = len(members) // run * run
        runs.extend(members[k : k + run] for k in range(0, full, run))
        rest.extend(members[full:])
    rest = [rest[k] for k in rng.permutation(len(rest))]
    whole = len(rest) // run * run
    runs.extend(rest[k : k + run] for k in range(0, whole, run))
    ordered = [b for r in rng.permutation(len(runs)) for b in runs[r]]
    return ordered + rest[whole:]  # a short run last, so every run starts at a step boundary


class BucketSampler:
    """Batches of same-bucket clips for one rank; deterministic from (seed, epoch); resumable.

    ``df`` is the clip table (``num_frames``, ``height``, ``width``, optional ``id``); the
    assignment is redone every epoch (keep-probability draws change with the epoch).
    ``seed`` defaults to ``config.seed`` and ``drop_last`` to ``config.drop_last``. With
    ``drop_last`` each bucket's incomplete batch is dropped and the last ``< num_replicas``
    batches of the epoch too (every rank gets the same count); without it, incomplete
    batches are kept and the epoch is padded with batches from its start. ``lockstep`` is the
    run length of same-bucket batches (module docstring); by default ``num_replicas`` when
    ``config.rank_lockstep``, else 1.
    """

    def __init__(
        self,
        df: pd.DataFrame,
        config: BucketsConfig,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int | None = None,
        shuffle: bool = True,
        drop_last: bool | None = None,
        id_column: str = "id",
        lockstep: int | None = None,
    ):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank {rank} of {num_replicas}")
        self.df = df.reset_index(drop=True)
        self.config = config
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(config.seed if seed is None else seed)
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        self.shuffle = bool(shuffle)
        self.drop_last = bool(config.drop_last if drop_last is None else drop_last)
        self.id_column = id_column
        if lockstep is None:
            lockstep = self.num_replicas if config.rank_lockstep else 1
        if lockstep < 1:
            raise ValueError(f"lockstep must be >= 1, got {lockstep}")
        self.lockstep = int(lockstep)
        self._resumed_lockstep: tuple[int, int] | None = None  # (epoch, run length of the checkpoint's plan)
        self._keys = clip_keys(self.df, id_column)
        self.epoch = 0
        self._start = 0  # global position the next __iter__ starts from
        self._iter_start = 0  # where the current/last iteration of this epoch started
        self._position = 0  # global batches consumed in this epoch
        self._cache: tuple[tuple[int, int], EpochPlan, np.ndarray] | None = None

    # -- epochs -----------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; a new epoch starts at its first batch. Setting the epoch a
        resumed state points at keeps the resume position."""
        epoch = int(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        if epoch != self.epoch:
            self.epoch = epoch
            self._start = self._iter_start = self._position = 0

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """The global plan of an epoch (cached for the last epoch asked)."""
        return self._plan(self.epoch if epoch is None else int(epoch))[0]

    def assignment(self, epoch: int | None = None) -> pd.DataFrame:
        """The clip table with the epoch's bucket columns (the same on every rank)."""
        return self.plan(epoch).assigned

    def _lockstep_of(self, epoch: int) -> int:
        """The run length of ``epoch``'s plan: a resumed epoch keeps its checkpoint's."""
        if self._resumed_lockstep is not None and self._resumed_lockstep[0] == epoch:
            return self._resumed_lockstep[1]
        return self.lockstep

    def _assign(self, epoch: int) -> pd.DataFrame:
        """The clip table with ``epoch``'s bucket columns."""
        return assign_buckets(self.df, self.config, self.seed, epoch, id_column=self.id_column)

    def _plan(self, epoch: int) -> tuple[EpochPlan, np.ndarray]:
        key = (epoch, self._lockstep_of(epoch))
        if self._cache is None or self._cache[0] != key:
            plan = plan_epoch(
                self._assign(epoch), seed=self.seed, epoch=epoch, shuffle=self.shuffle, drop_last=self.drop_last,
                lockstep=key[1],
            )
            clip_seeds = hash_u64(PURPOSE_CLIP_SEED, self.seed, epoch, self._keys)
            self._cache = (key, plan, clip_seeds)
        return self._cache[1], self._cache[2]

    def num_global_batches(self, epoch: int | None = None) -> int:
        return len(self.plan(epoch).batches)

    def _per_rank(self, total: int, start: int) -> int:
        remaining = max(0, total - start)
        if total == 0:
            return 0
        if self.drop_last:
            return remaining // self.num_replicas
        return -(-remaining // self.num_replicas)

    def __len__(self) -> int:
        """Batches this rank yields from the current start position of the epoch."""
        return self._per_rank(self.num_global_batches(), self._start)

    def batch(self, global_index: int, epoch: int | None = None) -> BucketBatch:
        """The epoch's ``global_index``-th batch (modulo the epoch's length)."""
        plan, seeds = self._plan(self.epoch if epoch is None else int(epoch))
        g = global_index % len(plan.batches)
        group, rows = plan.batches[g]
        key = plan.buckets[group]
        requests = [
            ClipRequest(int(i), key.num_frames, key.height, key.width, key.aspect_ratio, int(s))
            for i, s in zip(rows.tolist(), seeds[rows].tolist())
        ]
        return BucketBatch(requests, key, plan.batch_sizes[group], g)

    def __iter__(self) -> Iterator[BucketBatch]:
        total = self.num_global_batches()
        start = self._start
        self._iter_start = self._position = start
        count = self._per_rank(total, start)
        for k in range(count):
            batch = self.batch(start + k * self.num_replicas + self.rank)
            self._position = start + (k + 1) * self.num_replicas
            yield batch
        self._start = 0  # iterating the same epoch again starts over

    # -- resume -----------------------------------------------------------------------------
    def state_dict(self, steps: int | None = None) -> dict[str, Any]:
        """``{seed, epoch, position, ...}``; ``position`` counts global batches consumed.

        By default the position follows the batches this rank's iterator has handed out. A
        DataLoader with workers prefetches batches ahead of training; then pass ``steps``, the
        number of batches of this epoch the training loop has actually finished since the
        iteration started.
        """
        position = self._position if steps is None else self._iter_start + int(steps) * self.num_replicas
        return {
            "version": _STATE_VERSION,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": int(position),
            "num_replicas": self.num_replicas,
            "lockstep": self._lockstep_of(self.epoch),
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at ``state``'s epoch and position (any ``num_replicas``)."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported sampler state version {state.get('version')!r}")
        if int(state["seed"]) != self.seed:
            logger.warning("sampler seed %s replaced by the checkpoint's %s", self.seed, state["seed"])
            self.seed = int(state["seed"])
            self._cache = None
        for key in ("shuffle", "drop_last"):
            if key in state and bool(state[key]) != getattr(self, key):
                raise ValueError(f"checkpoint sampler has {key}={state[key]}, this one {getattr(self, key)}")
        position = int(state["position"])
        if position < 0:
            raise ValueError(f"sampler position must be non-negative, got {position}")
        self.epoch = int(state["epoch"])
        # States written before rank_lockstep existed planned batch by batch (run length 1).
        self._resumed_lockstep = (self.epoch, int(state.get("lockstep", 1)))
        self._start = self._iter_start = self._position = position
