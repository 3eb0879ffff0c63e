"""What gets registered: a validated, self-contained copy of the final model folder.

:func:`validate_model_folder` checks a folder before anything touches the registry (nothing
half-written on failure). :func:`build_bundle` copies it into one folder that an MLflow model
carries as its single artifact::

    soraflow_model/
      config.json, model.safetensors (the registered weights: raw or EMA), ema.safetensors,
      train.json, encoders.json   ("vae": "vae" when the VAE folder is bundled)
      vae/                        (the VAE folder, when it is a local folder)
      text_encoder/               (the text encoder, when it is a local folder)

Encoders given as ``package:<module>`` or hub ids stay references (they are installed or
cached wherever the model is loaded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "BUNDLE_NAME",
    "RegistryError",
    "build_bundle",
    "dvc_data_version",
    "read_eval_metrics",
    "validate_model_folder",
]

BUNDLE_NAME = "soraflow_model"
REQUIRED_FILES = ("config.json", "model.safetensors", "encoders.json")


class RegistryError(RuntimeError):
    """A model or metrics file that cannot be registered, or a registry state that blocks an action."""


def _local_folder(ref: str, base: Path | None = None) -> Path | None:
    if ref.startswith("package:"):
        return None
    p = Path(ref).expanduser()
    if base is not None and not p.is_absolute() and (base / p).is_dir():
        return base / p
    return p if p.is_dir() else None


def validate_model_folder(model_dir: str | Path) -> dict[str, Any]:
    """Check a final-model folder without loading weights into memory; returns its encoders.json.

    Checks: the files exist; config.json is a soraflow STDiT2 config; the safetensors headers
    hold exactly the model's tensors with the right shapes; encoders.json names the encoders
    and a local VAE folder (when the reference is a path) holds a config.
    """
    from safetensors import safe_open

    from soraflow.models.io import read_config
    from soraflow.models.stdit2 import STDiT2
    from soraflow.sampling.generator import read_encoders

    import torch

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise RegistryError(f"{model_dir}: model folder not found (run the train stage first)")
    missing = [f for f in REQUIRED_FILES if not (model_dir / f).is_file()]
    if missing:
        raise RegistryError(f"{model_dir}: not a complete model folder, missing {', '.join(missing)}")
    try:
        config = read_config(model_dir)
        enc = read_encoders(model_dir)
    except Exception as err:
        raise RegistryError(f"{model_dir}: {err}") from None
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in STDiT2(config).state_dict().items()}
    for name in ("model.safetensors", "ema.safetensors"):
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as err:
            raise RegistryError(f"{path}: unreadable weights ({type(err).__name__}: {err})") from None
        if shapes != expected:
            extra = sorted(set(shapes) - set(expected))[:3]
            lack = sorted(set(expected) - set(shapes))[:3]
            wrong = sorted(k for k in set(shapes) & set(expected) if shapes[k] != expected[k])[:3]
            raise RegistryError(
                f"{path}: weights do not match config.json (missing {lack}, unexpected {extra}, wrong shapes {wrong})"
            )
    ref = str(enc["vae"])
    vae = _local_folder(ref, model_dir)
    if vae is None and not ref.startswith("package:") and not _hub_cached(ref):
        raise RegistryError(
            f"{model_dir}/encoders.json: VAE {ref!r} is neither a local folder nor a cached hub model"
        )
    if vae is not None and not (vae / "config.json").is_file():
        raise RegistryError(f"{vae}: VAE folder without config.json")
    return enc


def _hub_cached(repo_id: str) -> bool:
    """True when a hub model's config is in the local Hugging Face cache (nothing is downloaded)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id=repo_id, filename="config.json")
    except Exception:
        return False
    return isinstance(found, str)


def build_bundle(model_dir: str | Path, dest: str | Path, *, use_ema: bool = False) -> Path:
    """Copy the model (and its local encoder folders) into ``dest/soraflow_model``; returns it."""
    model_dir = Path(model_dir)
    enc = validate_model_folder(model_dir)
    out = Path(dest) / BUNDLE_NAME
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in sorted(model_dir.iterdir()):
        if f.is_file():
            shutil.copy2(f, out / f.name)
    if use_ema:
        if not (model_dir / "ema.safetensors").is_file():
            raise RegistryError(f"{model_dir}: registry.use_ema is set but there is no ema.safetensors")
        shutil.copy2(model_dir / "ema.safetensors", out / "model.safetensors")
    enc = dict(enc)
    enc["weights"] = "ema" if use_ema else "raw"
    vae = _local_folder(str(enc["vae"]), model_dir)
    if vae is not None:
        shutil.copytree(vae, out / "vae", ignore=shutil.ignore_patterns(".*"))
        enc["vae_source"] = str(enc["vae"])
        enc["vae"] = "vae"
    else:
        log.warning("VAE %r is not a local folder; the registered model refers to it instead of bundling it", enc["vae"])
    te = _local_folder(str(enc["text_encoder"]), model_dir)
    if te is not None:
        shutil.copytree(te, out / "text_encoder", ignore=shutil.ignore_patterns(".*"))
        enc["text_encoder_source"] = str(enc["text_encoder"])
        enc["text_encoder"] = "text_encoder"
    (out / "encoders.json").write_text(json.dumps(enc, indent=2) + "\n")
    return out


def folder_md5(folder: str | Path) -> str:
    """md5 over the files of a folder (names and contents, sorted)."""
    h = hashlib.md5()
    folder = Path(folder)
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_eval_metrics(path: str | Path) -> dict[str, float | None]:
    """The flat numeric metrics of ``metrics/eval.json`` (non-finite values become None).

    Nested objects are flattened with dots (``{"loss": {"t100": 1}}`` -> ``loss.t100``);
    strings and lists are skipped. A missing or unreadable file is a :class:`RegistryError`.
    """
    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"{path}: evaluation metrics not found (run the evaluate stage first)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RegistryError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{path}: expected a JSON object of metrics")
    out: dict[str, float | None] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, bool) or value is None:
            return
        elif isinstance(value, (int, float)):
            out[prefix] = float(value) if math.isfinite(float(value)) else None

    walk("", doc)
    return out


def dvc_data_version(root: str | Path = ".") -> dict[str, str]:
    """The DVC data version of the project: md5 of ``dvc.lock`` and the hashes of the
    ``data/features`` and ``data/curated`` outputs recorded in it (``none`` when absent)."""
    import yaml

    from soraflow.yaml12 import load_yaml

    root = Path(root)
    lock = root / "dvc.lock"
    out = {"dvc_lock_md5": "none", "features_md5": "none", "curated_md5": "none"}
    if not lock.is_file():
        return out
    out["dvc_lock_md5"] = hashlib.md5(lock.read_bytes()).hexdigest()
    try:
        stages = (load_yaml(lock.read_text()) or {}).get("stages", {})
    except yaml.YAMLError:
        return out
    for stage in stages.values():
        for o in stage.get("outs", []) or []:
            p = str(o.get("path", "")).rstrip("/")
            key = {"data/features": "features_md5", "data/curated": "curated_md5"}.get(p)
            if key and o.get("md5"):
                out[key] = str(o["md5"])
    return out
