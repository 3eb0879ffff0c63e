"""Base pieces of every config section: strict pydantic models and readable errors.

Section models (``soraflow.<stage>.config``) import from here, not from ``soraflow.config``,
so that importing one section never needs the whole ``Params`` tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from soraflow.yaml12 import load_yaml


#: ``mixed_precision`` of every section (train, vae.demo_train, sample, eval): ``auto`` is bf16
#: autocast where the device computes bf16 natively (:func:`soraflow.precision.use_bf16_autocast`).
Precision = Literal["auto", "bf16", "fp32"]


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ConfigError(ValueError):
    """A ``params.yaml`` (or other config file) that cannot be used; the message names the key."""


def format_validation_error(err: ValidationError, source: str = "params.yaml") -> str:
    """One line per problem: ``source: key.path: message (got value)``."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        got = e.get("input")
        got_s = repr(got)
        if len(got_s) > 80:
            got_s = got_s[:77] + "..."
        lines.append(f"{source}: {path}: {msg} (got {got_s})")
    return "\n".join(lines)


def parse_model(model: type[BaseModel], data: Any, source: str) -> Any:
    """Validate ``data`` against ``model``; raise :class:`ConfigError` with key paths."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    try:
        with path.open() as f:
            return load_yaml(f) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}".replace("\n", " ")) from None
