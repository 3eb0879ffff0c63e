"""Process group setup, the DDP / FSDP2 wrappers, and the few collectives the loop needs.

Works in three settings with the same code:

* under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` ... set): a real
  process group, gloo on CPU and NCCL on GPU;
* a plain ``python`` process: world size 1 and no process group (no wrapper for DDP);
* a plain process with ``strategy: fsdp2``: a 1-rank gloo/NCCL group on an in-memory store,
  because ``fully_shard`` needs a device mesh.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None and dist.is_available() and dist.is_initialized()


def pick_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise RuntimeError("train.backend is nccl but no CUDA device is available; use gloo or auto")
    return backend


def init_distributed(backend: str = "auto", *, force_group: bool = False) -> DistContext:
    """Read the torchrun environment and start the process group if there is one.

    Without ``RANK``/``WORLD_SIZE`` in the environment this is a single process; ``force_group``
    then creates a 1-rank group on an in-memory store (FSDP2 needs one).
    """
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    under_launcher = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if dist.is_initialized():  # already set up by the caller
        name = dist.get_backend()
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, name)
    if under_launcher and (env_world > 1 or force_group):
        name = pick_backend(backend, device)
        kwargs: dict[str, Any] = {}
        if name == "nccl":
            kwargs["device_id"] = device
        dist.init_process_group(backend=name, **kwargs)
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, name)
    if force_group:
        name = pick_backend(backend, device)
        dist.init_process_group(backend=name, store=dist.HashStore(), rank=0, world_size=1)
        return DistContext(0, 1, 0, device, name)
    return DistContext(0, 1, 0, device, None)


def cleanup_distributed(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a small tensor over ranks (in place on a copy on the collective's device)."""
    if not ctx.distributed:
        return t
    buf = t.to(ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


def all_reduce_min(value: int, ctx: DistContext) -> int:
    if not ctx.distributed:
        return value
    buf = torch.tensor([value], dtype=torch.int64, device=ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(buf, op=dist.ReduceOp.MIN)
    return int(buf.item())


def all_gather_object(obj: Any, ctx: DistContext) -> list[Any]:
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module under a DDP wrapper (FSDP2 shards in place: nothing to unwrap)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shard_units(model: nn.Module) -> list[nn.Module]:
    """Submodules that FSDP2 shards one by one: a model's ``fsdp_units()`` if it has one,
    else every element of every ``nn.ModuleList`` child (transformer blocks)."""
    custom = getattr(model, "fsdp_units", None)
    if callable(custom):
        return list(custom())
    units: list[nn.Module] = []
    for child in model.children():
        if isinstance(child, nn.ModuleList):
            units.extend(child)
    return units


@torch.no_grad()
def broadcast_module(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (a collective)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)


def wrap_model(
    model: nn.Module, strategy: str, ctx: DistContext, *, broadcast_buffers: bool = True, local_sgd: bool = False
) -> nn.Module:
    """Wrap for data parallelism; the module must already be on ``ctx.device``.

    ``ddp``: ``DistributedDataParallel`` (``broadcast_buffers``: rank 0's buffers are sent to
    every rank before each forward, DDP's default; off saves a collective per step when the
    buffers never change after construction). ``local_sgd`` (DDP strategy only): no wrapper; the
    ranks start from rank 0's weights and the loop averages the parameters every few steps
    (:func:`average_tensors`).
    """
    if strategy == "fsdp2":
        if not ctx.distributed:
            raise RuntimeError("fsdp2 needs a process group; init_distributed(force_group=True)")
        from torch.distributed.fsdp import fully_shard

        broadcast_module(model)  # same start on every rank: FSDP2 does not broadcast
        for unit in shard_units(model):
            fully_shard(unit)
        fully_shard(model)
        return model
    if strategy != "ddp":
        raise ValueError(f"unknown strategy {strategy!r}")
    if not ctx.distributed:
        return model
    if local_sgd:
        broadcast_module(model)
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=broadcast_buffers)


@torch.no_grad()
def average_tensors(tensors: list[torch.Tensor], ctx: DistContext) -> None:
    """Replace every tensor by its mean over the ranks, in place: one flat all-reduce per dtype
    (local SGD's model averaging). ``torch.distributed.algorithms.model_averaging``'s
    ``average_parameters`` does the same for parameters but upcasts mixed dtypes into one buffer
    and rebinds each ``.data`` to a view of it; this copies back, so every tensor (parameters
    and Adam's moments alike) keeps its own storage and dtype."""
    if not ctx.distributed or not tensors:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    comm_device = ctx.device if ctx.backend == "nccl" else torch.device("cpu")
    for group in by_dtype.values():
        flat = torch.cat([t.detach().reshape(-1) for t in group]).to(comm_device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= ctx.world_size
        offset = 0
        for t in group:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's floating-point per-parameter state (Adam's moments), without step counts."""
    return [
        v
        for state in optimizer.state.values()
        for key, v in state.items()
        if key != "step" and isinstance(v, torch.Tensor) and v.is_floating_point()
    ]


@contextlib.contextmanager
def grad_sync(model: nn.Module, sync: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on micro-batches that are not the last of a step."""
    if isinstance(model, nn.parallel.DistributedDataParallel) and not sync:
        with model.no_sync():
            yield
        return
    setter = getattr(model, "set_requires_gradient_sync", None)  # FSDP2
    if setter is not None:
        setter(sync)
    yield


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly sharded) parameter; a collective for DTensors."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t
