"""An endless, resumable stream of batches over epochs of a batch sampler.

Two ways to resume the data order, chosen by what the sampler offers:

* **The sampler resumes itself** (``state_dict(steps=...)`` and ``load_state_dict``, like
  :class:`soraflow.buckets.BucketSampler`): at a checkpoint the engine asks for the state
  after ``steps`` batches *consumed by training* since the iteration started (a DataLoader
  with workers prefetches ahead, so the sampler's own counter would be too far); resuming
  loads it and iterates. Such a sampler can continue its data order with another number of
  ranks.
* **Any other sampler** (deterministic in ``(seed, epoch, rank)`` with ``set_epoch``): the
  engine keeps ``(epoch, batches consumed)`` and resumes by ``set_epoch`` + skipping that many
  batches of sampler keys (no data is loaded for them).

Each epoch's DataLoader gets its own generator seeded from ``(seed, rank, epoch)``: creating
a DataLoader iterator then draws nothing from the global torch RNG, which the loss uses.
Dataset ``__getitem__`` should be deterministic (it is for cached features); randomness in
worker processes is not part of exact resume.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, default_collate

from soraflow.training.components import Batch, Components


class _SkipFirst:
    """A batch sampler view that drops the first ``skip`` batches of the wrapped sampler."""

    def __init__(self, sampler: Any, skip: int):
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[list[Any]]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    return (seed * 1_000_003 + rank * 10_007 + epoch) % (2**63 - 1)


def resumes_itself(sampler: Any) -> bool:
    """Whether ``sampler`` has ``load_state_dict`` and a ``state_dict`` taking ``steps``."""
    if not (callable(getattr(sampler, "load_state_dict", None)) and callable(getattr(sampler, "state_dict", None))):
        return False
    try:
        return "steps" in inspect.signature(sampler.state_dict).parameters
    except (TypeError, ValueError):
        return False


class BatchStream:
    def __init__(
        self,
        components: Components,
        *,
        seed: int,
        rank: int,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        self.components = components
        self.sampler = components.sampler
        self.self_resuming = resumes_itself(self.sampler)
        self.seed = seed
        self.rank = rank
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.epoch = 0
        self.position = 0  # batches of this epoch consumed by training (this rank)
        self._since_start = 0  # ... since the current sampler iteration started
        self._skip = 0  # batches the engine skips when it next starts an iteration
        self._resumed = False
        self._it: Iterator[Batch] | None = None

    def _start(self) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        loader = DataLoader(
            self.components.dataset,
            batch_sampler=_SkipFirst(self.sampler, self._skip),
            collate_fn=self.components.collate_fn or default_collate,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(epoch_seed(self.seed, self.rank, self.epoch)),
        )
        self._from_start = self._skip == 0 and not self._resumed
        self._skip = 0
        self._resumed = False
        self._since_start = 0
        self._it = iter(loader)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        while True:
            if self._it is None:
                self._start()
            try:
                batch = next(self._it)  # type: ignore[arg-type]
            except StopIteration:
                self._it = None
                if self._from_start and self._since_start == 0:
                    raise RuntimeError(f"the batch sampler yields no batch in epoch {self.epoch} (rank {self.rank})")
                self.epoch += 1
                self.position = 0
                continue
            self.position += 1
            self._since_start += 1
            return batch

    def state(self) -> dict[str, Any]:
        """This rank's position, and the sampler's own state (if it has one)."""
        if self.self_resuming:
            sampler_state = self.sampler.state_dict(steps=self._since_start)
        elif callable(getattr(self.sampler, "state_dict", None)):
            sampler_state = self.sampler.state_dict()
        else:
            sampler_state = None
        return {"epoch": self.epoch, "position": self.position, "sampler": sampler_state}

    def restore(self, state: dict[str, Any], *, same_world: bool) -> bool:
        """Continue from a saved :meth:`state`; returns whether the data order is exact."""
        self._it = None
        self._resumed = True
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        if self.self_resuming and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
            return True
        if same_world:
            self._skip = self.position
            return True
        self.epoch, self.position = self.epoch + 1, 0  # cannot replay: next epoch
        return False
