"""What the engine needs from the model, data and loss: small interfaces, no STDiT knowledge.

A builder (``soraflow.training.worker.build_components``) returns a :class:`Components`:

* ``model``: an ``nn.Module`` (fp32, on CPU; the engine moves and wraps it). The real one is
  STDiT2, called ``model(x, timestep, y, mask=None, x_mask=None, *, height, width, ...)``.
* ``dataset`` + ``sampler``: a map-style dataset (``dataset[key] -> dict``) and a batch sampler
  yielding lists of keys, one bucket per batch. The sampler must be deterministic in
  ``(seed, epoch, rank)`` and have ``set_epoch``; ``state_dict``/``load_state_dict`` and
  ``len()`` are optional. The engine owns the position in the epoch (micro-batches consumed)
  and resumes by ``set_epoch`` + skipping that many batches, so prefetching DataLoader workers
  never make the saved position run ahead of the training.
* ``loss_fn(model, batch) -> dict``: ``loss`` [B] per sample (required); optional ``t`` [B]
  (timesteps, for the loss-by-timestep-quarter metric) and ``bucket`` (str or list of str).
  Randomness must come from the global torch RNG or from a generator listed in
  ``generators`` (both are checkpointed), so resumed runs draw the same noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

Batch = dict[str, Any]
LossFn = Callable[[nn.Module, Batch], dict[str, Any]]


@runtime_checkable
class BatchSampler(Protocol):
    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Iterator[list[Any]]: ...


@dataclass
class Components:
    model: nn.Module
    dataset: Any
    sampler: BatchSampler | Iterable[list[Any]]
    loss_fn: LossFn
    #: Collates a list of samples into a batch dict (default: ``torch.utils.data.default_collate``).
    collate_fn: Callable[[list[Any]], Batch] | None = None
    #: Replaces the captions of the samples where ``drop`` [B] is True by the null caption;
    #: ``None`` disables caption dropout. Default: :func:`drop_captions` (keys ``y``).
    caption_dropout: Callable[[nn.Module, Batch, torch.Tensor], Batch] | None = None
    #: Tokens of one batch (for tokens/s), e.g. frames x latent patches; optional.
    count_tokens: Callable[[Batch], int] | None = None
    #: Number of diffusion timesteps (quarters of it split the loss metric).
    num_timesteps: int = 1000
    #: Extra RNGs the loss or data use; their states go into every checkpoint.
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    #: Writes a final model folder (config JSON + ``model.safetensors``) from an unwrapped
    #: model, e.g. ``soraflow.models.save_model``; else the engine writes
    #: ``model_config`` + the weights itself.
    save_model: Callable[[nn.Module, Path], Any] | None = None
    model_config: dict[str, Any] | None = None
    #: Hooks, e.g. for tests: ``on_batch(step, micro, batch)`` before each micro-batch's
    #: forward, ``on_step_end(step, model)`` after each optimizer step (every rank).
    on_batch: Callable[[int, int, Batch], None] | None = None
    on_step_end: Callable[[int, nn.Module], None] | None = None
    #: ``evaluate(step, model) -> metrics`` on rank 0 every ``evaluate_every`` optimizer steps
    #: and at the last step, with the unwrapped model; rank 0's metrics join that step's metric
    #: line. It must leave the global RNG and the model's mode as it found them.
    evaluate: Callable[[int, nn.Module], dict[str, float]] | None = None
    evaluate_every: int = 0
    #: ``evaluate`` runs on every rank at those steps (e.g. to share the work), not rank 0 alone.
    evaluate_on_all_ranks: bool = False
    #: Free-form description of the data (buckets, sizes) for logs.
    info: dict[str, Any] = field(default_factory=dict)


def drop_captions(model: nn.Module, batch: Batch, drop: torch.Tensor) -> Batch:
    """Open-Sora's token drop: ``batch["y"][i]`` becomes the model's null caption where ``drop[i]``.

    ``y`` is ``[B, 1, L, C]`` or ``[B, L, C]``; ``model.null_caption(B, L)`` returns the null
    states (or ``(states, mask)``, as STDiT2 does). The text mask is left as it is, as in the
    original: the null caption is read through the prompt's mask, at training and sampling.
    """
    if not drop.any():
        return batch
    y = batch["y"]
    length = y.shape[-2]
    null = model.null_caption(y.shape[0], length)
    if isinstance(null, tuple | list):
        null = null[0]
    null = null.to(device=y.device, dtype=y.dtype)
    null = null.reshape(y.shape) if null.numel() == y.numel() else null.expand(y.shape)
    keep_shape = (-1,) + (1,) * (y.dim() - 1)
    out = dict(batch)
    out["y"] = torch.where(drop.to(y.device).view(keep_shape), null, y)
    return out
