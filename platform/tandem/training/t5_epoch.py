"""One epoch of the v1 T5 trainer, its stopping rules and checkpoints (callbacks), and its summary."""

from __future__ import annotations

import resource
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tandem.training.loop import Callback, Control, Position, Stage

if TYPE_CHECKING:
    from tandem.training.trainer import RunState, StagedTrainer, T5Stage


def run_epoch(trainer: StagedTrainer, stage: T5Stage, stage_idx: int, epoch: int, optimizer: Any, step0: int,
              seconds_left: float | None = None) -> dict[str, Any]:
    """One epoch of ``stage``; stops early (``truncated``) once ``seconds_left`` run out.

    Every epoch reseeds from ``(seed, stage index, epoch)``, so a resumed run continues as
    an uninterrupted one would."""
    import torch
    from tqdm.auto import tqdm

    from tandem.training.data import batches, collate
    from tandem.training.objectives import task_weights
    from tandem.training.t5_loss import batch_loss

    cfg, state = trainer.config, trainer._state  # noqa: SLF001 - the epoch belongs to the trainer
    rng = np.random.default_rng([cfg.seed, stage_idx, epoch])
    torch.manual_seed(cfg.seed * 1_000_003 + stage_idx * 1009 + epoch)
    examples = stage.examples(epoch, rng) if stage.examples is not None else []
    weights = task_weights(cfg.alpha, doc2id_weight=stage.doc2id_weight)
    n_batches = (len(examples) + cfg.batch_size - 1) // cfg.batch_size
    trainer.model.train()
    losses: list[float] = []
    task_sums: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    bar = tqdm(batches(examples, cfg.batch_size, rng), total=n_batches, disable=not trainer.progress,
               desc=f"{stage.name} epoch {epoch + 1}", leave=False, unit="batch")
    lr = 0.0
    done = seen = 0
    for b, batch in enumerate(bar):
        if seconds_left is not None and time.perf_counter() - t0 > seconds_left:
            break
        done += 1
        seen += len(batch)
        lr = _lr(stage, epoch, step0 + b, state.last_exact_match, cfg.memorise_lr.ramp_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs = collate(batch, trainer.tokenizer.pad_id, trainer.device)
        loss, parts = batch_loss(trainer.model, trainer.data, batch, inputs, weights, aligned=stage.aligned,
                                 step=step0 + b, rng=rng, device_type=trainer.device.type, bf16=trainer.bf16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), cfg.grad_clip)
        optimizer.step()
        value = float(loss.detach())
        losses.append(value)
        for name, v in parts.items():
            task_sums.setdefault(name, []).append(v)
        if (step0 + b) % 5 == 0:
            state.steps.append([step0 + b, stage_idx, value])
        bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.1e}")
    bar.close()
    seconds = time.perf_counter() - t0
    record = {
        "stage": stage.name, "epoch": epoch + 1, "steps": done, "examples": seen, "lr": lr,
        "loss": float(np.mean(losses)) if losses else float("nan"),
        "task_loss": {k: round(float(np.mean(v)), 4) for k, v in task_sums.items()},
        "seconds": round(seconds, 2), "samples_per_s": round(seen / max(seconds, 1e-9), 1),
    }
    if done < n_batches:
        record["truncated"] = f"time budget: {done} of {n_batches} steps"
    if stage.aligned and cfg.augment_share:
        record["augmented"] = trainer.data.augmented
    return record


def _lr(stage: T5Stage, epoch: int, step_in_stage: int, last_exact_match: float, ramp: int) -> float:
    """The stage's LR (its schedule's when it has one), ramped up over the first ``ramp`` steps."""
    base = stage.schedule(epoch, last_exact_match) if stage.schedule is not None else stage.lr
    if ramp and step_in_stage < ramp:
        return base * (step_in_stage + 1) / ramp
    return base


class Rules(Callback):
    """When a stage stops: before it starts once its deadline has passed; after an epoch at its
    exact-match target, at its deadline (or a truncated epoch) or out of epochs — with the reason."""

    def __init__(self, trainer: StagedTrainer) -> None:
        self.trainer = trainer

    @property
    def state(self) -> RunState:
        return self.trainer._state  # noqa: SLF001

    def on_stage_begin(self, stage: Stage, at: Position, control: Control) -> None:
        deadline = self.trainer.deadlines[stage.name]
        if deadline is not None and at.epoch < stage.epochs and self.state.elapsed >= deadline:
            self.state.stop_reasons[stage.name] = self._budget_reason(stage)  # spent by the stages before
            control.stop(self.state.stop_reasons[stage.name])

    def on_epoch_begin(self, stage: Stage, at: Position, control: Control) -> None:
        deadline = self.trainer.deadlines[stage.name]
        control.seconds_left = None if deadline is None else deadline - self.state.elapsed

    def on_epoch_end(self, stage: Stage, at: Position, record: dict[str, Any], control: Control) -> None:
        target = getattr(stage, "target", None)
        deadline = self.trainer.deadlines[stage.name]
        reason = ""
        if target is not None and self.state.last_exact_match >= target:
            reason = f"exact-match {self.state.last_exact_match:.3f} >= target {target}"
            control.stop(reason)
        elif deadline is not None and (self.state.elapsed >= deadline or "truncated" in record):
            reason = self._budget_reason(stage)
            control.stop(reason)
        elif at.epoch >= stage.epochs:
            reason = self._why_stopped(stage)
        if reason:
            self.state.stop_reasons[stage.name] = reason

    def _budget_reason(self, stage: Stage) -> str:
        done = len(self.state.records(stage))
        reason = f"time budget ({self.trainer.config.time_budget_minutes} min) reached after {done} epoch(s)"
        target = getattr(stage, "target", None)
        if target is not None and self.state.last_exact_match < target:
            reason += f"; exact-match {self.state.last_exact_match:.3f} < target {target}"
        return reason

    def _why_stopped(self, stage: Stage) -> str:
        target = getattr(stage, "target", None)
        if target is None:
            return f"ran its {stage.epochs} epochs"
        return (
            f"target exact-match {target} not reached in {stage.epochs} "
            f"epochs (reached {self.state.last_exact_match:.3f}); raise `memorise_max_epochs`, `exposures` "
            "or the model size (capacity), or check for duplicate item texts with distinct IDs"
        )


class Checkpoints(Callback):
    """A checkpoint after every epoch (model, tokenizer, optimiser mid-stage, run state, config)."""

    def __init__(self, trainer: StagedTrainer) -> None:
        self.trainer = trainer

    def on_save(self, stage: Stage, at: Position, record: dict[str, Any]) -> None:
        from tandem.training.checkpoint import CHECKPOINT_DIR, save_checkpoint

        t = self.trainer
        optimizer = t._optimizer if at.epoch and not stage.peft else None  # noqa: SLF001
        save_checkpoint(t.out / CHECKPOINT_DIR, t.model, t.tokenizer, optimizer,
                        {"run": t._state.__dict__, "config": t.config.model_dump(mode="json"),  # noqa: SLF001
                         "id_space": list(t.tokenizer.id_space)})


def summary(trainer: StagedTrainer, stages: list[T5Stage], state: RunState, wall: float,
            final: dict[str, Any] | None = None) -> dict[str, Any]:
    """The training summary; ``final``: the whole-catalog memorisation check when the epochs checked a sample."""
    import torch

    from tandem.generative.model import count_parameters

    cfg = trainer.config
    per_stage: dict[str, Any] = {}
    for stage in stages:
        recs = state.records(stage)
        if not recs:
            continue
        entry: dict[str, Any] = {"epochs": len(recs), "seconds": round(sum(r["seconds"] for r in recs), 1),
                                 "final_loss": round(recs[-1]["loss"], 4),
                                 "stop_reason": state.stop_reasons.get(stage.name, "")}
        if "memorisation" in recs[-1]:
            entry["memorisation"] = recs[-1]["memorisation"]
        per_stage[stage.name] = entry
    targeted = [(s.target, per_stage.get(s.name, {}).get("memorisation", {})) for s in stages if s.target is not None]
    reached = bool(targeted) and all(mem and mem["exact_match"] >= target for target, mem in targeted)
    n_docs = len(trainer.data.doc_examples)
    return {
        "config": cfg.model_dump(mode="json"),
        "device": str(trainer.device), "bf16_autocast": trainer.bf16,
        "items": len(trainer.items), "pairs": len(trainer.pairs),
        "id_map_version": str(getattr(trainer.id_map, "version", "")),
        "vocab_size": len(trainer.tokenizer), "parameters": count_parameters(trainer.model),
        "stages": per_stage,
        "memorisation_reached_target": reached,
        "final_memorisation": final or (state.epochs[-1].get("memorisation") if state.epochs else None),
        "checked_items_per_epoch": min(cfg.check_items or n_docs, n_docs),
        "train_seconds": round(state.seconds, 1), "wall_seconds_this_session": round(wall, 1),
        "samples": state.samples,
        "samples_per_s": round(state.samples / max(state.seconds, 1e-9), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "epochs": state.epochs,
        "strategies": trainer.data.strategy_summary(
            state.round_stats, next((r["peft"] for r in reversed(state.epochs) if "peft" in r), None)),
    }
