"""AdapterMetrics: one typed form of an adapter run's figures, stored flat, read back by the gate and the CLI."""

from __future__ import annotations

import pytest

from tandem.errors import InvalidInput
from tandem.training.adapter_metrics import AdapterMetrics

BEFORE = {"new_r10": 0.2, "new_exact_match": 0.1, "old_r10": 0.9, "old_exact_match": 0.95}
AFTER = {"new_r10": 0.9, "new_exact_match": 1.0, "old_r10": 0.85, "old_exact_match": 0.92}


def test_checks_become_the_stored_keys_and_read_back() -> None:
    m = AdapterMetrics.from_checks(10, BEFORE, AFTER)
    flat = m.as_dict()
    assert list(flat) == ["new_r10_before", "new_r10", "new_exact_match_before", "new_exact_match", "old_r10_before",
                          "old_r10", "old_exact_match_before", "old_exact_match", "forgetting", "old_r10_drop"]
    assert flat["forgetting"] == pytest.approx(0.03) and flat["old_r10_drop"] == pytest.approx(0.05)
    assert AdapterMetrics.from_dict(flat, 10) == m
    assert [r[0] for r in m.rows()][0] == "new-item R@10 (held-out pseudo-query)" and len(m.rows()) == 4


def test_v2_assignment_figures_and_no_old_items() -> None:
    m = AdapterMetrics.from_checks(5, {}, {"new_r5": 1.0, "new_exact_match": 1.0},
                                   assigned={"new_r5": 0.8, "new_exact_match": 0.7})
    flat = m.as_dict()
    assert flat == {"new_r5_before": 0.0, "new_r5_assigned": 0.8, "new_r5": 1.0, "new_exact_match_before": 0.0,
                    "new_exact_match_assigned": 0.7, "new_exact_match": 1.0}
    assert m.forgetting == 0.0 and len(m.rows()) == 2 and AdapterMetrics.from_dict(flat, 5) == m


def test_missing_figures_are_named() -> None:
    with pytest.raises(InvalidInput, match="`new_exact_match`"):
        AdapterMetrics.from_dict({"new_r10": 1.0}, 10)
