"""Model references: a local model folder or an MLflow URI, resolved to a local folder.

Accepted forms:

* a local folder holding ``config.json`` + ``model.safetensors`` + ``encoders.json`` (what the
  ``train`` stage writes to ``models/train/final``), or an MLflow model folder (``MLmodel``)
  whose artifacts hold such a folder (what the ``register`` stage logs);
* ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/PATH`` and any other
  artifact URI MLflow can download (``mlflow-artifacts:/...``, ``file:///...``); they are
  downloaded with :func:`mlflow.artifacts.download_artifacts` from the tracking/registry
  store of :func:`soraflow.tracking.tracking_uri` (``MLFLOW_TRACKING_URI`` /
  ``MLFLOW_REGISTRY_URI`` when set).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from soraflow.config_base import ConfigError

__all__ = [
    "CorruptModelError",
    "ENCODERS_NAME",
    "ModelNotFoundError",
    "find_model_folder",
    "is_mlflow_uri",
    "resolve_model_uri",
]

ENCODERS_NAME = "encoders.json"
_URI_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/")


class ModelNotFoundError(ConfigError):
    """A model reference that points at nothing (no folder, no registered model, no run)."""


class CorruptModelError(ConfigError):
    """A model folder that exists but cannot be loaded (files missing, unreadable, inconsistent)."""


def is_mlflow_uri(uri: str) -> bool:
    """True for ``scheme:/...`` references (``models:/``, ``runs:/``, ``mlflow-artifacts:/``, ...)."""
    return bool(_URI_RE.match(str(uri))) and not re.match(r"^[a-zA-Z]:[\\/]", str(uri))


def find_model_folder(folder: str | Path) -> Path:
    """The STDiT2 folder inside ``folder``: itself, or, for an MLflow model folder (``MLmodel``),
    the one folder under ``artifacts/`` holding ``config.json`` and ``encoders.json``."""
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    if (folder / "MLmodel").is_file():
        found = sorted(p.parent for p in (folder / "artifacts").rglob(ENCODERS_NAME) if (p.parent / "config.json").is_file())
        if len(found) == 1:
            return found[0]
        raise CorruptModelError(
            f"{folder}: an MLflow model without exactly one soraflow model folder under artifacts/ (found {len(found)})"
        )
    raise CorruptModelError(f"{folder}: not a model folder (no config.json; expected config.json, model.safetensors, {ENCODERS_NAME})")


def resolve_model_uri(uri: str | Path, dst_path: str | Path | None = None) -> Path:
    """A local model folder for ``uri`` (downloaded when it is an MLflow URI).

    Raises :class:`ModelNotFoundError` when nothing is there, :class:`CorruptModelError` when
    what is there is not a soraflow model.
    """
    text = str(uri).strip()
    if not text:
        raise ModelNotFoundError("model: empty model reference")
    if not is_mlflow_uri(text):
        path = Path(text).expanduser()
        if not path.exists():
            raise ModelNotFoundError(f"model {text!r}: no such folder (and not an MLflow URI such as models:/NAME@champion)")
        if not path.is_dir():
            raise CorruptModelError(f"model {text!r}: is a file, expected a model folder")
        return find_model_folder(path)
    return find_model_folder(download_model(text, dst_path))


def download_model(uri: str, dst_path: str | Path | None = None) -> Path:
    """Download an MLflow artifact URI into ``dst_path`` (default: a new temporary folder)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from soraflow.tracking import tracking_uri

    dst = Path(dst_path) if dst_path is not None else Path(tempfile.mkdtemp(prefix="soraflow-model-"))
    dst.mkdir(parents=True, exist_ok=True)
    track = tracking_uri()
    registry = os.environ.get("MLFLOW_REGISTRY_URI") or track
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(dst), tracking_uri=track, registry_uri=registry
        )
    except MlflowException as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelNotFoundError(f"model {uri!r}: cannot be found in the MLflow store {track} ({first})") from None
    except OSError as err:
        raise ModelNotFoundError(f"model {uri!r}: download from {track} failed ({err})") from None
    return Path(local)
