"""Full (unsharded, FQN-keyed) model and optimizer state for DDP, FSDP2 and single process.

``torch.distributed.checkpoint.state_dict`` gives the same format for all three: parameter
names without the ``module.`` prefix and optimizer state keyed by parameter name, so a
checkpoint written by 2 DDP ranks resumes in 1 process and vice versa. Under a process group
only rank 0 gets the tensors (gathered to CPU) and, when loading, only rank 0 needs them:
they are broadcast to the other ranks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from soraflow.training.distributed import DistContext


def _get_options(ctx: DistContext) -> StateDictOptions:
    if ctx.distributed:
        return StateDictOptions(full_state_dict=True, cpu_offload=True)
    return StateDictOptions()


def _set_options(ctx: DistContext, strict: bool = True) -> StateDictOptions:
    if ctx.distributed:
        return StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=strict)
    return StateDictOptions(strict=strict)


def model_state(model: nn.Module, ctx: DistContext) -> dict[str, torch.Tensor]:
    """Full model state on rank 0 (``{}`` on other ranks); a collective under a group."""
    return get_model_state_dict(model, options=_get_options(ctx))


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext) -> dict[str, Any]:
    return get_optimizer_state_dict(model, optimizer, options=_get_options(ctx))


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], ctx: DistContext, *, strict: bool = True) -> None:
    """Load a full state dict that rank 0 holds (other ranks may pass ``{}``)."""
    if not ctx.distributed:
        device = next(model.parameters()).device
        state = {k: v.to(device) for k, v in state.items()}
    set_model_state_dict(model, state, options=_set_options(ctx, strict))


def load_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], ctx: DistContext
) -> None:
    set_optimizer_state_dict(model, optimizer, state, options=_set_options(ctx))
