"""Build, save and load STDiT2 models as self-describing folders.

A model folder holds ``config.json`` (the :class:`STDiT2Config` plus a format tag) and
``model.safetensors`` (every parameter and the null-caption buffer). Loading needs only
this package: no training code, no params.yaml.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from soraflow.models.config import STDiT2Config
from soraflow.models.stdit2 import STDiT2

__all__ = ["CONFIG_NAME", "FORMAT", "WEIGHTS_NAME", "build_model", "load_model", "read_config", "save_model"]

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "soraflow.stdit2"
FORMAT_VERSION = 1


def build_model(
    config: STDiT2Config,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> STDiT2:
    """A freshly initialised :class:`STDiT2`. ``seed`` makes the init reproducible without
    touching the global RNG; ``device="meta"`` builds shapes only (for counting)."""
    if device is not None and torch.device(device).type == "meta":
        with torch.device("meta"):
            return STDiT2(config).to(dtype=dtype)
    if seed is not None:  # initialise on CPU from a private RNG: same weights on every device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = STDiT2(config)
    else:
        model = STDiT2(config)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def save_model(model: STDiT2, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``directory`` (created if needed).

    ``extra`` (JSON-serialisable) is stored under ``"extra"`` in config.json, e.g. the
    text encoder the model was trained with.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": FORMAT})
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": type(model).__name__,
        "config": model.config.model_dump(mode="json"),
        "dtype": str(next(iter(state.values())).dtype).replace("torch.", ""),
        "num_parameters": model.num_parameters(),
    }
    if extra:
        doc["extra"] = extra
    (directory / CONFIG_NAME).write_text(json.dumps(doc, indent=2) + "\n")
    log.info("saved %s (%d parameters) to %s", type(model).__name__, doc["num_parameters"], directory)
    return directory


def read_config(directory: str | Path) -> STDiT2Config:
    """The :class:`STDiT2Config` of a model folder."""
    path = Path(directory) / CONFIG_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no model config (is {directory} a model folder?)")
    doc = json.loads(path.read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: format {doc.get('format')!r} is not {FORMAT!r}")
    if int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path}: format version {doc['format_version']} is newer than this code ({FORMAT_VERSION})")
    return STDiT2Config.model_validate(doc["config"])


def load_model(
    directory: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> STDiT2:
    """Load a model folder written by :func:`save_model` (eval mode). Weights keep their
    stored dtype unless ``dtype`` is given."""
    config = read_config(directory)
    state = load_file(str(Path(directory) / WEIGHTS_NAME), device=str(device) if device is not None else "cpu")
    with torch.device("meta"):
        model = STDiT2(config)
    model.load_state_dict(state, strict=True, assign=True)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.eval()
