"""The distributed training engine: model-agnostic, torchrun-launched, exactly resumable.

* :mod:`~soraflow.training.config`: the ``train`` section of params.yaml (:class:`TrainConfig`);
* :mod:`~soraflow.training.components`: what a model/data/loss must offer (:class:`Components`);
* :mod:`~soraflow.training.loop`: :func:`train` (AdamW, warmup, grad accumulation, clipping,
  fp32 EMA, caption dropout, NaN stop, metrics, checkpoints, final model folder);
* :mod:`~soraflow.training.distributed`: process group, DDP / FSDP2 wrapping;
* :mod:`~soraflow.training.checkpoint`: atomic checkpoint folders, discovery, keep-last-K;
* :mod:`~soraflow.training.launch`: :func:`launch_torchrun` (streams the workers' logs);
* :mod:`~soraflow.training.worker`: the per-rank entry point (``python -m soraflow.training.worker``);
* :mod:`~soraflow.training.toy`: a tiny STDiT2 stand-in to test the engine alone.

Names are imported lazily so that reading the config does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config",
    "Components": "components",
    "drop_captions": "components",
    "train": "loop",
    "TrainResult": "loop",
    "NonFiniteLossError": "loop",
    "DistContext": "distributed",
    "init_distributed": "distributed",
    "latest_checkpoint": "checkpoint",
    "list_checkpoints": "checkpoint",
    "CheckpointError": "checkpoint",
    "launch_torchrun": "launch",
    "build_launch_command": "launch",
    "TrainingLaunchError": "launch",
    "read_metrics_file": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"soraflow.training.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'soraflow.training' has no attribute {name!r}")
