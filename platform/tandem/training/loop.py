"""The training loop both generative trainers share: declared stages, callbacks, one seam for parallelism.

Shaped like the Hugging Face ``Trainer``: a run is a list of :class:`Stage` objects (what
each trains on, its learning rate, epochs, PEFT or not, its share of the time budget) and
:class:`StageLoop` runs their epochs. Everything else — memorisation and dev checks,
stopping rules, time budgets, checkpoints, logs — is a :class:`Callback` that sees the
events (``on_train_begin``, ``on_stage_begin``, ``on_epoch_begin``, ``on_step_begin``,
``on_step_end``, ``on_epoch_end``, ``on_save``, ``on_log``, ``on_stage_end``,
``on_train_end``) and steers the loop through :class:`Control` (HF's ``TrainerControl``).
What differs between stages is declared on the stage; nothing outside a stage's
declaration asks which stage it is by name.

:class:`Parallel` is the one place where multi-process training plugs in: a trainer draws
its batch order through :meth:`Parallel.shard` and calls :meth:`Parallel.all_reduce`
between backward and the optimiser step (see :class:`Parallel`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Stage:
    """One declared training stage. Trainers subclass it for what only they need."""

    name: str
    epochs: int
    """Most epochs the stage runs (0: the stage is skipped)."""
    lr: float
    """Learning rate of the weights the stage trains (with ``peft``: the adapter's)."""
    examples: Callable[..., Any] | None = None
    """What the stage trains on; the trainer defines the arguments (e.g. epoch and RNG)."""
    peft: bool = False
    """Trains a parameter-efficient adapter (merged into the weights when it is done)."""
    budget_share: float | None = None
    """Share of the run's time budget (cumulative, see :func:`deadlines`); ``None``: the
    stage may run until the whole budget is spent."""
    batch_size: int | None = None
    """Examples per step (``None``: the trainer's default)."""


@dataclass
class Position:
    """Where a run stands: the stage index and the next epoch within it (what a checkpoint stores)."""

    stage: int = 0
    epoch: int = 0


@dataclass
class Control:
    """How callbacks steer the loop (HF's ``TrainerControl``); reset at every stage."""

    stop_epoch: bool = False
    """End the current epoch before its next step."""
    stop_stage: bool = False
    """Run no further epoch of this stage."""
    skip: bool = False
    """With ``stop_stage`` at stage begin: the stage has nothing to do and leaves no record."""
    reason: str = ""
    """Why the stage stopped (the first reason given wins)."""
    seconds_left: float | None = None
    """Time the running epoch may still take (a budget callback sets it at epoch begin)."""

    def stop(self, reason: str, *, now: bool = False) -> None:
        """Stop the stage (``now``: also the running epoch) for ``reason``."""
        self.stop_stage = True
        self.stop_epoch = self.stop_epoch or now
        self.reason = self.reason or reason


class Callback:
    """Hooks of :class:`StageLoop`; every one is optional (subclass and override)."""

    def on_train_begin(self) -> None:
        """Before the first stage."""

    def on_stage_begin(self, stage: Stage, at: Position, control: Control) -> None:
        """Before a stage's first epoch (also when resuming into it)."""

    def on_epoch_begin(self, stage: Stage, at: Position, control: Control) -> None:
        """Before an epoch."""

    def on_step_begin(self, stage: Stage, control: Control) -> None:
        """Before an optimiser step (the trainer calls :meth:`StageLoop.step_begin`)."""

    def on_step_end(self, stage: Stage, control: Control) -> None:
        """After an optimiser step (the trainer calls :meth:`StageLoop.step_end`)."""

    def on_epoch_end(self, stage: Stage, at: Position, record: dict[str, Any], control: Control) -> None:
        """After an epoch (``at.epoch`` already counts it); checks add to ``record``, rules stop."""

    def on_save(self, stage: Stage, at: Position, record: dict[str, Any]) -> None:
        """After the position moved past the epoch: the place for checkpoints."""

    def on_log(self, stage: Stage, record: dict[str, Any]) -> None:
        """Last after an epoch (after the checkpoint, so an interrupt here loses nothing)."""

    def on_stage_end(self, stage: Stage, control: Control) -> None:
        """After a stage that was not skipped."""

    def on_train_end(self) -> None:
        """After the last stage."""


class EpochFn(Protocol):
    """Trains one epoch of ``stage`` and returns its record."""

    def __call__(self, stage: Stage, epoch: int, control: Control) -> dict[str, Any]: ...


class StageLoop:
    """Runs declared stages epoch by epoch; callbacks do the rest (see the module docstring)."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(*args)

    def step_begin(self, stage: Stage, control: Control) -> bool:
        """Call before each step; ``True`` when the epoch must end instead."""
        self._emit("on_step_begin", stage, control)
        return control.stop_epoch

    def step_end(self, stage: Stage, control: Control) -> bool:
        """Call after each step; ``True`` when the epoch must end now."""
        self._emit("on_step_end", stage, control)
        return control.stop_epoch

    def run(self, stages: Sequence[Stage], epoch_fn: EpochFn, at: Position | None = None) -> Position:
        """Run ``stages`` from ``at`` (a resumed position) to the end; returns the final position."""
        at = at or Position()
        self._emit("on_train_begin")
        while at.stage < len(stages):
            stage = stages[at.stage]
            control = Control()
            self._emit("on_stage_begin", stage, at, control)
            while not control.stop_stage and at.epoch < stage.epochs:
                self._emit("on_epoch_begin", stage, at, control)
                record = epoch_fn(stage, at.epoch, control)
                at.epoch += 1
                self._emit("on_epoch_end", stage, at, record, control)
                if control.stop_stage or at.epoch >= stage.epochs:
                    at.stage, at.epoch = at.stage + 1, 0
                self._emit("on_save", stage, at, record)
                self._emit("on_log", stage, record)
                if at.epoch == 0:
                    break
            else:
                at.stage, at.epoch = at.stage + 1, 0
            if not control.skip:
                self._emit("on_stage_end", stage, control)
        self._emit("on_train_end")
        return at


def deadlines(stages: Iterable[Stage], budget_seconds: float | None) -> dict[str, float | None]:
    """Seconds into the run by which each stage must end: the budget times the cumulative
    ``budget_share`` of the stages up to it, over the stages that run (``epochs`` > 0), so
    time a stage leaves unused passes to the next. A stage without a share, or that does
    not run, gets the whole budget; no budget, no deadlines."""
    stages = list(stages)
    if budget_seconds is None:
        return {s.name: None for s in stages}
    running = [s for s in stages if s.epochs]
    total = sum(s.budget_share or 0.0 for s in running)
    out: dict[str, float | None] = {}
    cumulative = 0.0
    for s in stages:
        if s in running:
            cumulative += s.budget_share or 0.0
        share = s.budget_share is not None and s in running and total > 0
        out[s.name] = budget_seconds * cumulative / total if share else budget_seconds
    return out


@dataclass
class Parallel:
    """One process (the default); the seam where a distributed run plugs in.

    A DDP subclass sets ``rank``/``world`` (from ``torch.distributed``; :meth:`shard` then
    gives each rank every ``world``-th batch of the plan, which every rank shuffles with the
    same seed, so the shares are disjoint) and averages gradients across ranks in :meth:`all_reduce`
    (``torch.distributed.all_reduce`` on each ``p.grad``, then divide by ``world``). Trainers
    call both for every stage, so no stage needs to know whether it runs distributed.
    :class:`tandem.training.distributed.TorchDistributed` instead splits every batch across the
    ranks, so a run on N ranks takes the same steps as one process.
    """

    rank: int = 0
    world: int = 1

    def shard(self, plan: list[T]) -> list[T]:
        """This rank's share of an epoch's shuffled batch plan (all of it in one process)."""
        return plan if self.world == 1 else plan[self.rank :: self.world]

    def all_reduce(self, params: Iterable[Any]) -> None:
        """Average the gradients of ``params`` across ranks (nothing to do in one process)."""

    def reduce_loss(self, loss: float) -> float:
        """The step's loss over all ranks (this process's loss in one process)."""
        return loss

    def step_samples(self, local: int) -> int:
        """Samples of the last step over all ranks (``local`` in one process)."""
        return local

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank, so stop rules agree across ranks (``flag`` in one process)."""
        return flag

    def sync(self, params: Iterable[Any]) -> None:
        """Give every rank rank 0's values of freshly initialised ``params`` (nothing in one process)."""
