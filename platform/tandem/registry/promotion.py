"""The promotion gate: whether a newly trained base model or adapter may become ``current``.

Pure functions over figures, so the pipelines' gate step, the CLI and tests share one rule:

* **base model**: promoted only when dev nDCG@10 ≥ the current base's − ``ndcg_tolerance``
  (a new monthly base may trade a little quality for fresh items, never a lot) *and*
  memorisation exact-match ≥ ``min_exact_match`` (a model that cannot name its own items
  cannot retrieve them, whatever a small dev set says). With no current base the nDCG
  comparison is waived: the first base has nothing to regress against.
* **adapter**: promoted only when forgetting (drop of exact-match on the old items) ≤
  ``max_forgetting`` and, when the new-item recall is given, it is ≥ ``min_new_recall``.

Each gate returns a :class:`PromotionDecision` whose :meth:`~PromotionDecision.as_dict`
and :meth:`~PromotionDecision.to_markdown` are what the pipeline stores as its artifact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tandem.errors import InvalidInput

DEFAULT_NDCG_TOLERANCE = 0.01
DEFAULT_MIN_EXACT_MATCH = 0.9
DEFAULT_MAX_FORGETTING = 0.05


def _fraction(name: str, value: float) -> float:
    """``value`` when it is a finite number in [0, 1]; :class:`InvalidInput` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise InvalidInput(f"`{name}` must be a number between 0 and 1, got {value!r}")
    return float(value)


def validate_base_thresholds(ndcg_tolerance: float, min_exact_match: float) -> None:
    """Raise :class:`InvalidInput` when a base-gate threshold is outside [0, 1].

    Called by the pipelines' first step so a bad parameter fails before hours of training.
    """
    _fraction("ndcg_tolerance", ndcg_tolerance)
    _fraction("min_exact_match", min_exact_match)


@dataclass(frozen=True)
class PromotionDecision:
    """Outcome of a gate: ``promote`` plus every figure and check it was decided on."""

    kind: str
    """``base-model`` or ``adapter``."""
    promote: bool
    checks: list[dict[str, Any]] = field(default_factory=list)
    """One entry per rule: ``name``, ``value``, ``threshold``, ``op`` and ``passed``."""
    figures: dict[str, float | None] = field(default_factory=dict)

    @property
    def reasons(self) -> list[str]:
        """Human-readable lines, one per check (why it passed or failed)."""
        return [
            f"{c['name']}: {_fmt(c['value'])} {c['op']} {_fmt(c['threshold'])} → {'pass' if c['passed'] else 'FAIL'}"
            for c in self.checks
        ]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the gate step writes next to its Markdown)."""
        return {"kind": self.kind, "promote": self.promote, "checks": list(self.checks), "figures": dict(self.figures),
                "reasons": self.reasons}

    def to_markdown(self) -> str:
        """The decision as a Markdown table, readable in the KFP UI."""
        verdict = "**PROMOTE**" if self.promote else "**REJECT** (kept the current version)"
        lines = [f"# Promotion gate: {self.kind}", "", f"Decision: {verdict}", "",
                 "| check | value | rule | threshold | result |", "|---|---|---|---|---|"]
        for c in self.checks:
            lines.append(f"| {c['name']} | {_fmt(c['value'])} | {c['op']} | {_fmt(c['threshold'])} | "
                         f"{'pass' if c['passed'] else 'FAIL'} |")
        lines += ["", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in self.figures.items()]
        return "\n".join(lines) + "\n"


def validate_adapter_thresholds(max_forgetting: float, min_new_recall: float) -> None:
    """Raise :class:`InvalidInput` when an adapter-gate threshold is outside [0, 1] (the
    adapter pipeline's first step, so a bad parameter fails before any training)."""
    _fraction("max_forgetting", max_forgetting)
    _fraction("min_new_recall", min_new_recall)


def _fmt(v: object) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


_EPS = 1e-9
"""Slack of every comparison: a figure equal to its threshold up to float noise (a metric
re-read from a manifest, ``current - tolerance`` in floats) counts as equal, i.e. passes."""


def _check(name: str, value: float, op: str, threshold: float) -> dict[str, Any]:
    passed = value >= threshold - _EPS if op == ">=" else value <= threshold + _EPS
    return {"name": name, "value": value, "op": op, "threshold": threshold, "passed": bool(passed)}


def gate_base(
    candidate_ndcg10: float,
    exact_match: float,
    current_ndcg10: float | None,
    *,
    ndcg_tolerance: float = DEFAULT_NDCG_TOLERANCE,
    min_exact_match: float = DEFAULT_MIN_EXACT_MATCH,
) -> PromotionDecision:
    """Decide on a new base model from its dev nDCG@10, its memorisation exact-match and the
    current base's dev nDCG@10 (``None`` when no base is current)."""
    validate_base_thresholds(ndcg_tolerance, min_exact_match)
    cand = _fraction("candidate_ndcg10", candidate_ndcg10)
    em = _fraction("exact_match", exact_match)
    checks = [_check("memorisation exact-match", em, ">=", min_exact_match)]
    if current_ndcg10 is not None:
        cur = _fraction("current_ndcg10", current_ndcg10)
        checks.append(_check("dev nDCG@10", cand, ">=", cur - ndcg_tolerance))
    figures: dict[str, float | None] = {
        "candidate_ndcg10": cand, "current_ndcg10": current_ndcg10, "exact_match": em,
        "ndcg_tolerance": ndcg_tolerance, "min_exact_match": min_exact_match,
    }
    return PromotionDecision("base-model", all(c["passed"] for c in checks), checks, figures)


def gate_adapter(
    forgetting: float,
    *,
    max_forgetting: float = DEFAULT_MAX_FORGETTING,
    new_recall: float | None = None,
    min_new_recall: float = 0.0,
) -> PromotionDecision:
    """Decide on an adapter from its forgetting (exact-match lost on the base's items) and,
    when given, its new-item recall (an adapter that does not make the new items findable
    is not worth a reload, however little it forgets)."""
    limit = _fraction("max_forgetting", max_forgetting)
    floor = _fraction("min_new_recall", min_new_recall)
    # Negative forgetting (old items recalled better than before) is legitimate.
    if isinstance(forgetting, bool) or not isinstance(forgetting, int | float) or not -1 <= forgetting <= 1:
        raise InvalidInput(f"`forgetting` must be a number between -1 and 1, got {forgetting!r}")
    value = float(forgetting)
    checks = [_check("forgetting", value, "<=", limit)]
    figures: dict[str, float | None] = {"forgetting": value, "max_forgetting": limit}
    if new_recall is not None:
        recall = _fraction("new_recall", new_recall)
        checks.append(_check("new-item recall", recall, ">=", floor))
        figures |= {"new_recall": recall, "min_new_recall": floor}
    return PromotionDecision("adapter", all(c["passed"] for c in checks), checks, figures)
