"""``registry`` section of params.yaml: the registered model and the champion/challenger rule.

Promotion rule (see :func:`soraflow.registry.promotion.compare`): the challenger becomes
champion only if, on every metric listed in ``metrics``, it is at least as good as the
champion (within ``tolerance``), and on at least one of them strictly better by more than
``tolerance``. A metric missing or not finite on either side never promotes; a tie on every
metric never promotes. With no champion yet, the first valid challenger is promoted.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from soraflow.config_base import StrictModel


class MetricRule(StrictModel):
    """One metric of ``metrics/eval.json`` and its direction."""

    name: str = Field(min_length=1)
    higher_is_better: bool = True


def _default_metrics() -> list[MetricRule]:
    return [
        MetricRule(name="color_accuracy", higher_is_better=True),
        MetricRule(name="shape_accuracy", higher_is_better=True),
        MetricRule(name="direction_accuracy", higher_is_better=True),
        MetricRule(name="fid", higher_is_better=False),
    ]


class RegistryConfig(StrictModel):
    """MLflow model registry: model name, metrics compared for promotion, where they are read."""

    model_name: str = Field("soraflow-stdit", min_length=1, max_length=200)
    #: The model folder registered (what the ``train`` stage writes).
    model_dir: str = "models/train/final"
    #: The evaluation metrics (a ``dvc metrics`` JSON file written by the ``evaluate`` stage).
    eval_metrics_path: str = "metrics/eval.json"
    metrics: list[MetricRule] = Field(default_factory=_default_metrics, min_length=1)
    #: Differences of at most this much count as ties.
    tolerance: float = Field(0.0, ge=0.0)
    #: Register the EMA weights (``ema.safetensors``) as the model's weights.
    use_ema: bool = False
    #: Also try promotion right after registering (the ``register`` stage); false = only
    #: ``soraflow promote`` promotes.
    auto_promote: bool = True
    #: Where each decision is written (a ``dvc metrics``-style JSON; also tagged in MLflow).
    decision_path: str = "metrics/promotion.json"

    @field_validator("metrics")
    @classmethod
    def _unique(cls, v: list[MetricRule]) -> list[MetricRule]:
        names = [m.name for m in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"metric listed twice: {', '.join(dup)}")
        return v
