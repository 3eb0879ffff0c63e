"""The typed view of ``params.yaml``: one pydantic model, every tunable of every stage.

Each stage owns its section model (``soraflow.<stage>.config``, built on
:class:`soraflow.config_base.StrictModel`); this module composes them into :class:`Params`.
Errors name the key path and the bad value, so a broken ``params.yaml`` fails before any
work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from soraflow.config_base import ConfigError, StrictModel, parse_model, read_yaml

# Section models, one per stage package.
from soraflow.demo.config import DemoConfig
from soraflow.models.config import ModelConfig
from soraflow.evaluation.config import EvalConfig
from soraflow.sampling.config import SampleConfig
from soraflow.registry.config import RegistryConfig
from soraflow.encoders.config import TextEncoderConfig, VAEConfig
from soraflow.training.config import TrainConfig
from soraflow.diffusion.config import DiffusionConfig
from soraflow.masks.config import MaskConfig
from soraflow.buckets.config import BucketsConfig
from soraflow.curation.config import CurateConfig
from soraflow.features.config import FeaturesConfig

__all__ = ["ConfigError", "Params", "StrictModel", "flatten_params", "load_params"]

DEFAULT_PARAMS_PATH = Path("params.yaml")



class Params(StrictModel):
    """All of ``params.yaml``. Sections are filled in as stages land."""

    demo: DemoConfig = DemoConfig()
    model: ModelConfig = ModelConfig()
    eval: EvalConfig = EvalConfig()
    sample: SampleConfig = SampleConfig()
    registry: RegistryConfig = RegistryConfig()
    vae: VAEConfig = VAEConfig()
    text_encoder: TextEncoderConfig = TextEncoderConfig()
    train: TrainConfig = TrainConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    masks: MaskConfig = MaskConfig()
    buckets: BucketsConfig = BucketsConfig()
    curate: CurateConfig = CurateConfig()
    features: FeaturesConfig = FeaturesConfig()


def load_params(path: str | Path = DEFAULT_PARAMS_PATH) -> Params:
    """Read and validate ``params.yaml``; raises :class:`ConfigError` naming the bad key."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return parse_model(Params, data, str(path))


def flatten_params(params: BaseModel, prefix: str = "") -> dict[str, Any]:
    """``{"section.key": value}`` for logging to MLflow."""
    out: dict[str, Any] = {}
    for key, value in params.model_dump(mode="json").items():
        _flatten(f"{prefix}{key}", value, out)
    return out


def _flatten(key: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{key}.{k}", v, out)
    else:
        out[key] = value
