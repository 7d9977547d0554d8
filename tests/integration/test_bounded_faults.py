"""Issue 19's fault scenarios (bench.faults): poison records and oversized dead letters against
a real broker, floods, deep requests and an intent outage against a real gateway — nothing
lost, doubled or failed, and the stream still moving afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem_testing import bounded_faults

pytestmark = pytest.mark.integration


def _clean(r: bounded_faults.ScenarioResult) -> None:
    assert (r.failures, r.lost, r.duplicated) == (0, 0, 0), r.figures()


@pytest.mark.parametrize("scenario", ["poison_version", "oversized_dead_letter"])
def test_ingest_scenarios(scenario: str, tmp_path: Path, kafka_bootstrap: str) -> None:
    r = getattr(bounded_faults, scenario)(tmp_path, kafka_bootstrap, n_items=40)
    _clean(r)
    assert r.recovery_s is not None  # the stream moved after the bad records
    if scenario == "oversized_dead_letter":
        assert r.details["truncated"] == 1


@pytest.mark.parametrize("scenario", ["filter_flood", "topk_inflation", "intent_down"])
def test_gateway_scenarios(scenario: str) -> None:
    r = getattr(bounded_faults, scenario)(seconds=1.5)
    _clean(r)
    assert r.count > 0
