"""Model registry (issue 7): register trained models in MLflow, champion/challenger promotion.

Public API::

    from soraflow.registry import RegistryConfig, compare, log_and_register, promote, rollback
    with stage_run("register", params):
        mv = log_and_register(params.registry)           # new version, alias "challenger"
    result = promote(params.registry)                     # champion moves only if it wins
    rollback(params.registry)                             # champion back to "previous"

Names are imported lazily so that reading the config does not load MLflow or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MetricRule": "config",
    "RegistryConfig": "config",
    "Decision": "promotion",
    "MetricComparison": "promotion",
    "compare": "promotion",
    "BUNDLE_NAME": "bundle",
    "RegistryError": "bundle",
    "build_bundle": "bundle",
    "dvc_data_version": "bundle",
    "read_eval_metrics": "bundle",
    "validate_model_folder": "bundle",
    "CHALLENGER": "registry",
    "CHAMPION": "registry",
    "PREVIOUS": "registry",
    "PromotionResult": "registry",
    "RegisteredVersion": "registry",
    "get_client": "registry",
    "log_and_register": "registry",
    "pip_requirements": "registry",
    "promote": "registry",
    "rollback": "registry",
    "version_metrics": "registry",
    "SoraflowVideoModel": "pyfunc",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"soraflow.registry.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'soraflow.registry' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
