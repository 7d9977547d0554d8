"""The promotion gate's rules: base (nDCG tolerance + memorisation) and adapter (forgetting)."""

from __future__ import annotations

import math

import pytest

from tandem.errors import InvalidInput
from tandem.registry.promotion import gate_adapter, gate_base, validate_base_thresholds


def test_first_base_needs_only_memorisation() -> None:
    assert gate_base(0.1, 0.95, None).promote
    decision = gate_base(0.9, 0.85, None)
    assert not decision.promote
    assert decision.reasons == ["memorisation exact-match: 0.8500 >= 0.9000 → FAIL"]


@pytest.mark.parametrize(
    ("candidate", "current", "tolerance", "promote"),
    [(0.30, 0.30, 0.01, True), (0.29, 0.30, 0.01, True), (0.2899, 0.30, 0.01, False), (0.35, 0.30, 0.0, True),
     (0.2999, 0.30, 0.0, False)],
)
def test_base_ndcg_within_tolerance(candidate: float, current: float, tolerance: float, promote: bool) -> None:
    decision = gate_base(candidate, 0.95, current, ndcg_tolerance=tolerance)
    assert decision.promote is promote
    assert decision.figures["current_ndcg10"] == current
    assert [c["name"] for c in decision.checks] == ["memorisation exact-match", "dev nDCG@10"]


def test_equal_figures_pass_despite_float_noise() -> None:
    # A re-run with the same seed reproduces the current base's figure; 0.1 + 0.2 != 0.3 in floats.
    assert gate_base(0.3, 0.95, 0.1 + 0.2, ndcg_tolerance=0.0).promote
    assert gate_base(0.84709, 0.95, 0.84709, ndcg_tolerance=0.0).promote
    assert gate_base(0.29, 0.95, 0.3, ndcg_tolerance=0.3 - 0.29).promote
    assert gate_adapter(0.1 + 0.2, max_forgetting=0.3).promote


def test_base_fails_on_memorisation_even_with_better_ndcg() -> None:
    assert not gate_base(0.5, 0.89, 0.3).promote
    assert gate_base(0.5, 0.9, 0.3).promote  # the threshold itself passes


def test_decision_artifacts() -> None:
    d = gate_base(0.25, 0.92, 0.3, ndcg_tolerance=0.01)
    md = d.to_markdown()
    assert "**REJECT**" in md and "| dev nDCG@10 | 0.2500 | >= | 0.2900 | FAIL |" in md
    as_dict = d.as_dict()
    assert as_dict["promote"] is False and as_dict["kind"] == "base-model"
    assert as_dict["figures"]["candidate_ndcg10"] == 0.25


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, math.inf, True, "0.5"])
def test_thresholds_out_of_range(bad: object) -> None:
    with pytest.raises(InvalidInput, match="`ndcg_tolerance`"):
        validate_base_thresholds(bad, 0.9)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="`min_exact_match`"):
        gate_base(0.3, 0.95, None, min_exact_match=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="`max_forgetting`"):
        gate_adapter(0.0, max_forgetting=bad)  # type: ignore[arg-type]


def test_adapter_forgetting() -> None:
    assert gate_adapter(0.02, max_forgetting=0.05).promote
    assert gate_adapter(-0.01, max_forgetting=0.0).promote  # improved on old items
    d = gate_adapter(0.06, max_forgetting=0.05)
    assert not d.promote and d.kind == "adapter" and "FAIL" in d.to_markdown()
    with pytest.raises(InvalidInput, match="`forgetting`"):
        gate_adapter(2.0)


def test_adapter_new_item_recall_floor() -> None:
    assert gate_adapter(0.0, new_recall=0.5, min_new_recall=0.5).promote
    d = gate_adapter(0.0, new_recall=0.2, min_new_recall=0.5)
    assert not d.promote and [c["name"] for c in d.checks] == ["forgetting", "new-item recall"]
    assert d.figures["new_recall"] == 0.2
    assert not gate_adapter(0.1, new_recall=0.9, min_new_recall=0.5).promote  # forgetting still rules
    with pytest.raises(InvalidInput, match="`new_recall`"):
        gate_adapter(0.0, new_recall=1.5)
    with pytest.raises(InvalidInput, match="`min_new_recall`"):
        gate_adapter(0.0, new_recall=0.5, min_new_recall=-1)
