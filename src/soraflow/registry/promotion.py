"""The champion/challenger rule: pure functions, no MLflow.

:func:`compare` decides whether a challenger's metrics beat the champion's. The rule:

* every metric named in ``registry.metrics`` must be present and finite for both models,
  otherwise: no promotion ("missing metrics never promote");
* the challenger must be at least as good as the champion on every metric (a difference of
  at most ``tolerance`` in the wrong direction counts as a tie), and
* strictly better on at least one metric (by more than ``tolerance``);
  "ties never promote": equal on all metrics is not a win.
* With no champion at all, a challenger with every metric present and finite is promoted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Decision", "MetricComparison", "compare"]


@dataclass(frozen=True)
class MetricComparison:
    name: str
    higher_is_better: bool
    challenger: float | None
    champion: float | None
    #: better | worse | tie | missing
    outcome: str


@dataclass(frozen=True)
class Decision:
    """Whether to promote, and why (``reason`` is one human-readable line)."""

    promote: bool
    reason: str
    comparisons: list[MetricComparison] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _value(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    if metrics is None or name not in metrics:
        return None
    v = metrics[name]
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt(v: float | None) -> str:
    return "missing" if v is None else f"{v:.6g}"


def compare(
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    rules: Sequence[Any],
    tolerance: float = 0.0,
) -> Decision:
    """Apply the rule of the module docstring. ``rules``: objects with ``name`` and
    ``higher_is_better`` (:class:`soraflow.registry.config.MetricRule`)."""
    if not rules:
        return Decision(False, "no metrics configured for the comparison (registry.metrics is empty)")
    comps: list[MetricComparison] = []
    for rule in rules:
        c = _value(challenger, rule.name)
        k = _value(champion, rule.name) if champion is not None else None
        if c is None or (champion is not None and k is None):
            outcome = "missing"
        elif champion is None:
            outcome = "better"
        else:
            diff = (c - k) if rule.higher_is_better else (k - c)
            outcome = "better" if diff > tolerance else ("worse" if diff < -tolerance else "tie")
        comps.append(MetricComparison(rule.name, bool(rule.higher_is_better), c, k, outcome))

    def desc(m: MetricComparison) -> str:
        arrow = "higher" if m.higher_is_better else "lower"
        return f"{m.name} ({arrow} is better) {_fmt(m.challenger)} vs {_fmt(m.champion)}"

    missing = [m for m in comps if m.outcome == "missing"]
    if missing:
        sides = []
        for m in missing:
            who = "challenger" if m.challenger is None else "champion"
            sides.append(f"{m.name} missing for the {who}")
        return Decision(False, "not promoted: " + "; ".join(sides) + " (missing metrics never promote)", comps)
    if champion is None:
        return Decision(True, "promoted: no champion yet and every metric is present (" + ", ".join(
            f"{m.name}={_fmt(m.challenger)}" for m in comps) + ")", comps)
    worse = [m for m in comps if m.outcome == "worse"]
    better = [m for m in comps if m.outcome == "better"]
    if worse:
        return Decision(False, "not promoted: worse on " + "; ".join(desc(m) for m in worse), comps)
    if not better:
        return Decision(False, f"not promoted: tie on every metric (tolerance {tolerance:g}); ties never promote", comps)
    return Decision(True, "promoted: better on " + "; ".join(desc(m) for m in better) + (
        "; no worse elsewhere" if len(better) < len(comps) else ""), comps)
