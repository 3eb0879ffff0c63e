"""The champion/challenger rule (pure): wins, ties, losses, missing metrics, tolerance."""

from __future__ import annotations

import math

import pytest

from soraflow.config_base import ConfigError, parse_model
from soraflow.registry import RegistryConfig, compare

RULES = RegistryConfig().metrics  # color/shape/direction accuracy (higher), fid (lower)
BASE = {"color_accuracy": 0.5, "shape_accuracy": 0.5, "direction_accuracy": 0.5, "fid": 20.0}


def _with(**kw):
    return {**BASE, **kw}


def test_better_on_one_and_equal_elsewhere_promotes() -> None:
    d = compare(_with(color_accuracy=0.6), BASE, RULES)
    assert d.promote and "color_accuracy" in d.reason
    d = compare(_with(fid=15.0), BASE, RULES)  # lower fid is better
    assert d.promote and "fid (lower is better) 15 vs 20" in d.reason


def test_worse_on_any_metric_blocks() -> None:
    d = compare(_with(color_accuracy=0.9, fid=21.0), BASE, RULES)
    assert not d.promote and "worse on fid" in d.reason
    outcomes = {c.name: c.outcome for c in d.comparisons}
    assert outcomes == {"color_accuracy": "better", "shape_accuracy": "tie", "direction_accuracy": "tie", "fid": "worse"}


def test_ties_never_promote() -> None:
    d = compare(dict(BASE), BASE, RULES)
    assert not d.promote and "tie on every metric" in d.reason
    # within tolerance counts as a tie, in both directions
    d = compare(_with(color_accuracy=0.505, fid=20.004), BASE, RULES, tolerance=0.01)
    assert not d.promote and "tie" in d.reason
    assert compare(_with(color_accuracy=0.52), BASE, RULES, tolerance=0.01).promote


def test_missing_metrics_never_promote() -> None:
    challenger = {k: v for k, v in _with(color_accuracy=0.9).items() if k != "fid"}
    d = compare(challenger, BASE, RULES)
    assert not d.promote and "fid missing for the challenger" in d.reason
    d = compare(_with(color_accuracy=0.9), {k: v for k, v in BASE.items() if k != "shape_accuracy"}, RULES)
    assert not d.promote and "shape_accuracy missing for the champion" in d.reason
    d = compare(_with(fid=math.nan, color_accuracy=0.9), BASE, RULES)
    assert not d.promote and "fid missing" in d.reason
    d = compare(_with(fid="n/a"), BASE, RULES)
    assert not d.promote


def test_first_model_needs_every_metric() -> None:
    assert compare(dict(BASE), None, RULES).promote
    d = compare({"color_accuracy": 1.0}, None, RULES)
    assert not d.promote and "missing" in d.reason


def test_registry_config_validation() -> None:
    cfg = parse_model(RegistryConfig, {"metrics": [{"name": "fid", "higher_is_better": False}], "tolerance": 0.1}, "p")
    assert [m.name for m in cfg.metrics] == ["fid"]
    with pytest.raises(ConfigError, match="listed twice"):
        parse_model(RegistryConfig, {"metrics": [{"name": "fid"}, {"name": "fid"}]}, "p")
    with pytest.raises(ConfigError, match="tolerance"):
        parse_model(RegistryConfig, {"tolerance": -1}, "p")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_model(RegistryConfig, {"metric": []}, "p")
