"""The shared stage loop: event order, stopping and skipping, resuming, deadlines, the parallel seam."""

from __future__ import annotations

import time

from typing import Any

import pytest

from tandem.training.loop import Callback, Control, Parallel, Position, Stage, StageLoop, deadlines


class Recorder(Callback):
    """Logs every event; stops ``stop_in`` after its first epoch and skips ``skip``."""

    def __init__(self, stop_in: str = "", skip: str = "") -> None:
        self.events: list[str] = []
        self.stop_in, self.skip = stop_in, skip

    def on_train_begin(self) -> None:
        self.events.append("train")

    def on_stage_begin(self, stage: Stage, at: Position, control: Control) -> None:
        self.events.append(f"begin {stage.name}@{at.epoch}")
        if stage.name == self.skip:
            control.skip = True
            control.stop("nothing to do")

    def on_epoch_end(self, stage: Stage, at: Position, record: dict[str, Any], control: Control) -> None:
        if stage.name == self.stop_in:
            control.stop("target reached")

    def on_save(self, stage: Stage, at: Position, record: dict[str, Any]) -> None:
        self.events.append(f"save {record['epoch']} -> {at.stage}.{at.epoch}")

    def on_stage_end(self, stage: Stage, control: Control) -> None:
        self.events.append(f"end {stage.name} ({control.reason or 'epochs done'})")

    def on_train_end(self) -> None:
        self.events.append("done")


def _run(stages: list[Stage], rec: Recorder, at: Position | None = None) -> tuple[Position, list[str]]:
    trained: list[str] = []

    def epoch(stage: Stage, e: int, control: Control) -> dict[str, Any]:
        trained.append(f"{stage.name}{e}")
        return {"epoch": e + 1}

    return StageLoop([rec]).run(stages, epoch, at), trained


def test_stages_run_in_order_and_callbacks_stop_and_skip() -> None:
    stages = [Stage("a", 2, 0.1), Stage("b", 3, 0.1), Stage("c", 2, 0.1), Stage("d", 0, 0.1)]
    rec = Recorder(stop_in="b", skip="c")
    end, trained = _run(stages, rec)
    assert trained == ["a0", "a1", "b0"]  # b stopped after one epoch, c skipped, d has no epochs
    assert rec.events == ["train", "begin a@0", "save 1 -> 0.1", "save 2 -> 1.0", "end a (epochs done)",
                          "begin b@0", "save 1 -> 2.0", "end b (target reached)", "begin c@0",
                          "begin d@0", "end d (epochs done)", "done"]
    assert (end.stage, end.epoch) == (4, 0)


def test_a_resumed_position_continues_mid_stage() -> None:
    rec = Recorder()
    end, trained = _run([Stage("a", 2, 0.1), Stage("b", 3, 0.1)], rec, Position(stage=1, epoch=1))
    assert trained == ["b1", "b2"] and rec.events[1] == "begin b@1" and end.stage == 2


def test_step_hooks_end_an_epoch() -> None:
    class StopAfterTwo(Callback):
        steps = 0

        def on_step_end(self, stage: Stage, control: Control) -> None:
            self.steps += 1
            if self.steps == 2:
                control.stop("budget", now=True)

    loop = StageLoop([StopAfterTwo()])
    done: list[int] = []

    def epoch(stage: Stage, e: int, control: Control) -> dict[str, Any]:
        for step in range(5):
            done.append(step)
            if loop.step_end(stage, control):
                break
        return {}

    loop.run([Stage("a", 3, 0.1)], epoch)
    assert done == [0, 1]  # the epoch ended at once and the stage with it


def test_deadlines_are_cumulative_shares_of_the_stages_that_run() -> None:
    stages = [Stage("a", 1, 0.1, budget_share=0.1), Stage("b", 1, 0.1, budget_share=0.4),
              Stage("c", 0, 0.1, budget_share=0.5), Stage("d", 1, 0.1, budget_share=0.4), Stage("e", 1, 0.1)]
    due = deadlines(stages, 900.0)
    assert due["a"] == pytest.approx(100.0) and due["b"] == pytest.approx(500.0) and due["d"] == pytest.approx(900.0)
    assert due["c"] == 900.0 and due["e"] == 900.0  # not running / no share of its own: the whole budget
    assert deadlines(stages, None) == dict.fromkeys("abcde")


def test_parallel_shards_the_plan_disjointly() -> None:
    plan = list(range(7))
    assert Parallel().shard(plan) == plan
    ranks = [Parallel(rank=r, world=3).shard(plan) for r in range(3)]
    assert sorted(x for r in ranks for x in r) == plan and ranks[0] == [0, 3, 6]


def test_tree_budget_skips_a_stage_once_spent() -> None:
    from tandem.training.tree_trainer import Budget

    budget = Budget(1e-9)
    control = Control()
    budget.on_stage_begin(Stage("x", 1, 0.1), Position(), control)
    assert control.skip and control.stop_stage and "time budget" in control.reason
    assert not Budget(None).over()
    moving = [time.perf_counter() + 60.0]  # a second deadline is asked each time: it may move
    second = Budget(None, until=lambda: moving[0])
    assert not second.over()
    moving[0] = time.perf_counter() - 1.0
    assert second.over()
