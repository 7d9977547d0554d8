"""LagWatch: consumer lag from end offsets and positions; partitions that stop fetching are re-seeked."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from tandem.streams.lag import LagWatch

A, B = TopicPartition("items", 0), TopicPartition("items", 1)


class FakeConsumer:
    """The calls LagWatch makes, over settable end offsets and positions."""

    def __init__(self, ends: dict[Any, int], positions: dict[Any, int]) -> None:
        self.ends, self.positions = ends, positions
        self.seeks: list[tuple[Any, int]] = []
        self.fail = False
        self.paused_tps: set[Any] = set()

    def assignment(self) -> set[Any]:
        return set(self.positions)

    def end_offsets(self, tps: list[Any], timeout_ms: int | None = None) -> dict[Any, int]:
        if self.fail:
            raise KafkaTimeoutError("broker down")
        return {tp: self.ends[tp] for tp in tps}

    def position(self, tp: Any, timeout_ms: int | None = None) -> int:
        return self.positions[tp]

    def paused(self) -> set[Any]:
        return self.paused_tps

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))


def test_lag_is_end_minus_position_summed_over_the_assignment() -> None:
    kafka, watch = FakeConsumer({A: 10, B: 4}, {A: 7, B: 4}), LagWatch()
    assert watch.lag is None
    watch.check(kafka)
    assert watch.lag == 3 and kafka.seeks == []


def test_a_partition_with_lag_and_no_progress_is_reseeked_to_its_own_position() -> None:
    kafka, watch = FakeConsumer({A: 30, B: 5}, {A: 0, B: 5}), LagWatch(stall_checks=2)
    watch.check(kafka)
    assert kafka.seeks == []  # one check without progress is not yet a stall
    watch.check(kafka)
    assert kafka.seeks == [(A, 0)] and watch.stalls == 1  # B has no lag: never a stall
    watch.check(kafka)
    assert kafka.seeks == [(A, 0)]  # the count starts again after a re-seek
    watch.check(kafka)
    assert kafka.seeks == [(A, 0), (A, 0)]


def test_a_partition_that_moves_between_checks_is_not_a_stall() -> None:
    kafka, watch = FakeConsumer({A: 1000}, {A: 0}), LagWatch(stall_checks=2)
    for pos in (0, 100, 250, 400, 400):
        kafka.positions[A] = pos
        watch.check(kafka)
    assert kafka.seeks == []  # a backlog draining; the last two checks are only one without progress
    watch.check(kafka)
    assert kafka.seeks == [(A, 400)]


def test_an_unreachable_broker_leaves_the_figures_and_seeks_nothing() -> None:
    kafka, watch = FakeConsumer({A: 9}, {A: 2}), LagWatch(stall_checks=1)
    kafka.fail = True
    watch.check(kafka)
    assert watch.lag is None and kafka.seeks == []


def test_checks_run_only_every_every_s() -> None:
    kafka, watch = FakeConsumer({A: 9}, {A: 2}), LagWatch(every_s=3600)
    watch.maybe_check(kafka)
    assert watch.lag is None
    watch._next_at = 0.0
    watch.maybe_check(kafka)
    assert watch.lag == 7


@pytest.mark.parametrize("kwargs", [{"every_s": 0}, {"stall_checks": 0}, {"rebuild_after": 0}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LagWatch(**kwargs)  # type: ignore[arg-type]


def test_a_paused_partition_counts_as_lag_but_is_never_reseeked() -> None:
    kafka, watch = FakeConsumer({A: 30}, {A: 0}), LagWatch(stall_checks=1)
    kafka.paused_tps = {A}
    watch.check(kafka)
    watch.check(kafka)
    assert watch.lag == 30 and kafka.seeks == []


def test_a_partition_stuck_through_re_seeks_asks_for_a_new_client() -> None:
    kafka, watch = FakeConsumer({A: 30, B: 9}, {A: 0, B: 0}), LagWatch(stall_checks=1, rebuild_after=2)
    watch.check(kafka)
    assert kafka.seeks == [(A, 0), (B, 0)] and not watch.rebuild_due
    kafka.positions[B] = 9  # B moves (and is caught up): only A stays stuck
    watch.check(kafka)
    assert watch.rebuild_due and kafka.seeks[-1] == (A, 0)
    watch.reset()
    assert not watch.rebuild_due


def test_client_states_reads_what_the_client_knows_of_each_partition() -> None:
    from types import SimpleNamespace

    from tandem.streams.lag import client_states

    kafka = FakeConsumer({A: 3}, {A: 0})
    kafka._subscription = SimpleNamespace(assignment={A: SimpleNamespace(highwater=None, paused=False)})  # type: ignore[attr-defined]
    assert client_states(kafka) == {"items[0]": {"highwater": None, "paused": False}}
