"""The staged trainer of the v1 generative retriever, a from-scratch T5 (seed chapter, 5.1.2 and 5.2).

The stages are declared in :meth:`StagedTrainer.stages` and run by the shared
:class:`~tandem.training.loop.StageLoop`:

* ``pretrain`` — span-corruption denoising on catalog text (from-scratch starts only);
* ``memorise`` — doc→id with balanced exposure and a progressive curriculum, LR warm-up →
  main → refinement; stops at the target exact-match or reports why not;
* ``align`` — query→id (α) + id→query (1 − α) at a lower LR with doc→id replay, optionally
  through a PEFT adapter merged after every epoch;
* ``id2q_round`` (``TrainConfig.id2q_round``) — queries sampled from the model's id→query
  direction, kept when they round-trip, added to another alignment pass.

Callbacks verify memorisation after every epoch (:class:`_Rules` stops on the target or the
time budget), checkpoint every epoch (so ``resume=True`` continues an interrupted run) and
log. The strategies of sections 5.3–5.4 are ``TrainConfig`` fields, applied by
:mod:`tandem.training.t5_data` (examples) and :mod:`tandem.training.t5_loss` (loss terms).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tandem.catalog.item import Item
from tandem.errors import InvalidInput
from tandem.training.checkpoint import CHECKPOINT_DIR
from tandem.training.config import TrainConfig
from tandem.training.loop import Callback, Control, Position, Stage, StageLoop, deadlines
from tandem.training.objectives import Example
from tandem.training.t5_data import T5Data
from tandem.training.verify import MemorisationReport, verify_memorisation

log = logging.getLogger(__name__)

STAGES = ("pretrain", "memorise", "align", "id2q_round")


@dataclass
class RunState(Position):
    """Where a run stands (``stage``, next ``epoch``) and its history; serialised into every checkpoint."""

    last_exact_match: float = 0.0
    epochs: list[dict[str, Any]] = field(default_factory=list)
    """One record per finished epoch (stage, loss, LR, memorisation, speed)."""
    steps: list[list[float]] = field(default_factory=list)
    """``[global_step, stage, loss]`` every few steps, for the curve."""
    stop_reasons: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    samples: int = 0
    elapsed: float = 0.0
    """Seconds of training and memorisation checks so far (what ``time_budget_minutes`` counts)."""
    generated: list[list[Any]] = field(default_factory=list)
    """id→query round: kept ``[query, item index]`` pairs (in the checkpoint, so a resumed
    round trains on the queries generated before the interruption)."""
    round_stats: dict[str, float] = field(default_factory=dict)
    """id→query round: queries sampled, new (not already a training text), kept, seconds."""

    def records(self, stage: Stage) -> list[dict[str, Any]]:
        """The finished epochs of ``stage``."""
        return [r for r in self.epochs if r["stage"] == stage.name]


@dataclass(frozen=True)
class T5Stage(Stage):
    """A T5 stage: :class:`Stage` plus what only this trainer needs. ``examples(epoch, rng)``."""

    checked: bool = True
    """Memorisation is verified after every epoch."""
    target: float | None = None
    """Stop once the checked exact-match reaches it (a stage without one runs its epochs)."""
    aligned: bool = False
    """A query→id stage: FGSM / gradient-norm and ranking terms apply."""
    doc2id_weight: float = 1.0
    """Loss weight of doc→id examples (replay weight outside stage 2)."""
    schedule: Callable[[int, float], float] | None = None
    """Base LR from (epoch, last exact-match); ``None``: ``lr`` throughout."""
    before: Callable[[RunState], None] | None = None
    """A job before the stage's first epoch, run only within the time budget."""


class StagedTrainer(Callback):
    """Trains a generative retriever on ``items`` (with IDs from ``id_map``) and query pairs.

    ``id_map`` needs ``codes(item_id) -> tuple[int, ...]`` (equal length for all items),
    ``save(path)``, ``version`` and ``len()`` — :class:`tandem.ids.IdMap` provides them.
    """

    def __init__(self, config: TrainConfig, items: Sequence[Item], id_map: Any, pairs: Sequence[tuple[str, str]],
                 out: Path, *, pretrained: Path | None = None, device: str = "auto", progress: bool = True,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 bm25_run: Mapping[str, Sequence[str]] | None = None,
                 pseudo: Mapping[str, Sequence[str]] | None = None) -> None:
        """``bm25_run`` (query text → BM25-ranked item IDs) feeds ``hard_negatives``; when
        it is needed and not given, it is computed with Pyserini over ``items``.
        ``pseudo`` (item ID → pseudo-queries, e.g. from the pipeline's preparation step)
        replaces generating the template pseudo-queries here; ``pseudo_queries`` still caps
        how many per item are used."""
        from tandem.generative.model import pick_device, use_bf16

        if not items:
            raise InvalidInput("`catalog` is empty; nothing to train on")
        self.config, self.items, self.id_map, self.pairs = config, list(items), id_map, list(pairs)
        self.out = Path(out)
        self.pretrained = Path(pretrained) if pretrained else None
        self.progress, self.on_epoch, self.bm25_run, self.pseudo = progress, on_epoch, bm25_run, pseudo
        self._state = RunState()
        self._check_sample: list[Example] | None = None
        """The fixed ``check_items`` sample of doc→id examples (drawn at the first check)."""
        self.device = pick_device(device)
        self.bf16 = use_bf16(config.precision, self.device)
        self.codes, self.item_index = self._code_matrix()
        unknown = sorted({item_id for _, item_id in self.pairs} - self.item_index.keys())
        if unknown:
            raise InvalidInput(f"`pairs` name {len(unknown)} item(s) outside the catalog, e.g. `{unknown[0]}`")

    def _code_matrix(self) -> tuple[np.ndarray, dict[str, int]]:
        index: dict[str, int] = {}
        rows = []
        for i, item in enumerate(self.items):
            if item.item_id in index:
                raise InvalidInput(f"`catalog` lists item `{item.item_id}` twice")
            index[item.item_id] = i
            try:
                rows.append(tuple(self.id_map.codes(item.item_id)))
            except (KeyError, LookupError):
                raise InvalidInput(
                    f"catalog item `{item.item_id}` has no semantic ID in the ID map; rebuild the IDs over this catalog"
                ) from None
        if len({len(r) for r in rows}) != 1:
            raise InvalidInput("the ID map gives IDs of different lengths; all IDs must have one length")
        return np.asarray(rows, dtype=np.int64), index

    def id_space(self) -> list[int]:
        """Codes per ID position (the ID map's declared space, reserved codes included)."""
        from tandem.generative.idmap import id_space

        return id_space(self.id_map, self.codes)

    def stages(self) -> list[T5Stage]:
        """The declared stages, in order (their index seeds each epoch; keep it stable)."""
        cfg = self.config
        share = cfg.budget_shares.get
        peft = cfg.align_peft != "none"
        align_lr = cfg.align_peft_lr if peft else cfg.align_lr
        return [
            T5Stage("pretrain", 0 if self.pretrained is not None else cfg.pretrain_epochs, cfg.pretrain_lr,
                    examples=lambda e, r: self.data.denoising(e, r), budget_share=share("pretrain", 0.0),
                    checked=False, doc2id_weight=cfg.replay_weight),
            T5Stage("memorise", cfg.memorise_max_epochs, cfg.memorise_lr.main,
                    examples=lambda e, r: self.data.memorising(e, r), budget_share=share("memorise", 0.0),
                    target=cfg.memorise_target, schedule=self._memorise_lr),
            T5Stage("align", cfg.align_epochs, align_lr, peft=peft, budget_share=share("align", 0.0), aligned=True,
                    examples=lambda e, r: self._aligning(e, r, curriculum=True, generated=()),
                    doc2id_weight=cfg.replay_weight),
            T5Stage("id2q_round", cfg.id2q_epochs if cfg.id2q_round else 0, align_lr, peft=peft,
                    budget_share=share("id2q_round", 0.0), aligned=True, doc2id_weight=cfg.replay_weight,
                    examples=lambda e, r: self._aligning(e, r, curriculum=False, generated=self._state.generated),
                    before=self._id2q_round),
        ]

    def _memorise_lr(self, epoch: int, last_exact_match: float) -> float:
        """Stage 2: warm-up, main, then refinement once memorised or late in the stage."""
        cfg = self.config
        sched = cfg.memorise_lr
        if epoch < sched.warmup_epochs:
            return sched.warmup
        if last_exact_match >= sched.refine_at or epoch >= int(0.8 * cfg.memorise_max_epochs):
            return sched.refinement
        return sched.main

    def _aligning(self, epoch: int, rng: np.random.Generator, *, curriculum: bool,
                  generated: Sequence[Sequence[Any]]) -> list[Example]:
        from tandem.training.curriculum import example_accuracy

        return self.data.aligning(epoch, rng, curriculum=curriculum, generated=generated,
                                  accuracy=lambda ex: example_accuracy(self.model, self.tokenizer, ex, self.device))

    def _build(self, resume_state: dict[str, Any] | None) -> None:
        """Tokenizer and model (from the checkpoint, a pretrained folder, or from scratch), then the examples."""
        import torch

        from tandem.generative.model import build_model, load_pretrained
        from tandem.generative.tokenizer import TandemTokenizer, train_tokenizer

        cfg = self.config
        torch.manual_seed(cfg.seed)
        ckpt = self.out / CHECKPOINT_DIR
        if resume_state is not None:
            from tandem.training.checkpoint import load_model

            self.tokenizer = TandemTokenizer.load(ckpt, resume_state["id_space"])
            self.model = load_model(ckpt)
        else:
            corpus = [it.text() for it in self.items] + [q for q, _ in self.pairs]
            self.tokenizer = train_tokenizer(corpus, cfg.vocab_size, self.id_space())
            if self.pretrained is not None:
                self.model = load_pretrained(self.pretrained, self.tokenizer)
            else:
                self.model = build_model(cfg.size, self.tokenizer, cfg.max_input_length)
        self.model.to(self.device)  # type: ignore[arg-type]  # transformers stub types .to as PreTrainedModel's wrapper
        self.data = T5Data.build(cfg, self.items, self.codes, self.item_index, self.pairs, self.tokenizer,
                                 pseudo=self.pseudo, bm25_run=self.bm25_run)

    def verify(self, everything: bool = False) -> MemorisationReport:
        """Memorisation check of the current model: over the ``check_items`` sample after an
        epoch, over the whole catalog with ``everything``."""
        examples = self.data.doc_examples
        n = self.config.check_items
        if not everything and n is not None and n < len(examples):
            if self._check_sample is None:  # the same items after every epoch
                pick = np.random.default_rng([self.config.seed, 7]).choice(len(examples), size=n, replace=False)
                self._check_sample = [examples[i] for i in np.sort(pick)]
            examples = self._check_sample
        return verify_memorisation(self.model, self.tokenizer, examples, self.device, autocast=self.bf16)

    # -- the run -------------------------------------------------------------------------------

    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train all stages (continuing a checkpoint when ``resume``) and write the model folder.

        Returns the training summary, also written to ``training_summary.json``.
        """
        import torch

        threads = torch.get_num_threads()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        try:
            return self._run(resume)
        finally:
            torch.set_num_threads(threads)

    def _run(self, resume: bool) -> dict[str, Any]:
        from tandem.generative.artifacts import save_artifact
        from tandem.training.checkpoint import read_state
        from tandem.training.report import write_curve, write_summary
        from tandem.training.t5_epoch import Checkpoints, Rules, summary

        ckpt = self.out / CHECKPOINT_DIR
        saved = read_state(ckpt) if resume else None
        if saved is not None and saved.get("config") != self.config.model_dump(mode="json"):
            raise InvalidInput(f"`resume`: the checkpoint in {ckpt} was made with a different configuration")
        self._build(saved)
        self._state = state = RunState(**saved["run"]) if saved else RunState()
        self._saved = saved
        stages = self.stages()
        budget = self.config.time_budget_minutes
        self.deadlines = deadlines(stages, None if budget is None else budget * 60)
        wall0 = time.perf_counter()
        StageLoop([self, Rules(self), Checkpoints(self)]).run(stages, self._train_epoch, state)
        final = None
        if self.config.check_items is not None and self.config.check_items < len(self.data.doc_examples):
            t_check = time.perf_counter()
            final = self.verify(everything=True).as_dict() | {"seconds": round(time.perf_counter() - t_check, 1)}
        result = summary(self, stages, state, time.perf_counter() - wall0, final)
        write_summary(self.out, result)
        write_curve(self.out, state.steps, state.epochs, [s.name for s in stages],
                    shaded={s.name for s in stages if s.aligned})
        save_artifact(self.out, self.model, self.tokenizer, self.id_map,
                      max_input_length=self.config.max_input_length, training=result)
        return result

    # -- stage and epoch events (the trainer is the first callback) -----------------------------

    def on_stage_begin(self, stage: Stage, at: Position, control: Control) -> None:
        """The stage's pre-stage job within the budget, its optimiser (a checkpoint's when resuming)."""
        import torch

        from tandem.training.checkpoint import load_optimizer

        assert isinstance(stage, T5Stage)
        deadline = self.deadlines[stage.name]
        if stage.before is not None and stage.epochs and (deadline is None or self._state.elapsed < deadline):
            stage.before(self._state)
        # A PEFT stage builds each epoch's optimizer over that epoch's fresh adapter.
        self._optimizer = None if stage.peft else torch.optim.AdamW(self.model.parameters(), lr=stage.lr,
                                                                    weight_decay=self.config.weight_decay)
        if self._saved is not None and at.epoch > 0 and self._optimizer is not None:
            load_optimizer(self.out / CHECKPOINT_DIR, self._optimizer, self._saved)
        self._saved = None
        self._step = sum(r["steps"] for r in self._state.records(stage))

    def on_epoch_begin(self, stage: Stage, at: Position, control: Control) -> None:
        self._t_epoch = time.perf_counter()

    def _train_epoch(self, stage: Stage, epoch: int, control: Control) -> dict[str, Any]:
        from tandem.training.t5_epoch import run_epoch

        assert isinstance(stage, T5Stage)
        if stage.peft:
            self._optimizer = self._wrap_peft(stage)
        record = run_epoch(self, stage, self._state.stage, epoch, self._optimizer, self._step, control.seconds_left)
        if stage.peft:
            record["peft"] = self._merge_peft()
        self._step += record["steps"]
        self._state.samples += record["examples"]
        self._state.seconds += record["seconds"]
        return record

    def on_epoch_end(self, stage: Stage, at: Position, record: dict[str, Any], control: Control) -> None:
        """The memorisation check of a checked stage; the epoch's time counts towards the budget."""
        assert isinstance(stage, T5Stage)
        if stage.checked:
            t_check = time.perf_counter()
            report = self.verify()
            self._state.last_exact_match = report.exact_match
            record["memorisation"] = report.as_dict()
            record["check_seconds"] = round(time.perf_counter() - t_check, 2)
        self._state.elapsed += time.perf_counter() - self._t_epoch  # examples, steps and the check
        self._state.epochs.append(record)

    def on_log(self, stage: Stage, record: dict[str, Any]) -> None:
        mem = record.get("memorisation", {})
        log.info("%s epoch %d: loss %.4f, %.0f samples/s%s", record["stage"], record["epoch"], record["loss"],
                 record["samples_per_s"], f", exact-match {mem['exact_match']:.3f}" if mem else "")
        if self.on_epoch is not None:
            self.on_epoch(record)

    def _wrap_peft(self, stage: Stage) -> Any:
        """Wrap the model in a fresh stage adapter; returns the adapter's optimizer."""
        import torch

        from tandem.training.peft_methods import PeftSpec, apply_peft

        cfg = self.config
        if cfg.align_peft == "none":
            raise InvalidInput("_wrap_peft needs align_peft set to an adapter method, not 'none'")
        spec = PeftSpec(method=cfg.align_peft, rank=cfg.align_peft_rank, alpha=2.0 * cfg.align_peft_rank)
        self.model = apply_peft(self.model, spec)
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=stage.lr, weight_decay=cfg.weight_decay)

    def _merge_peft(self) -> dict[str, Any]:
        """Fold the epoch's adapter into the weights; returns its trainable-parameter counts."""
        from tandem.training.peft_methods import merge, trainable_parameters

        counts = trainable_parameters(self.model)
        self.model = merge(self.model)
        return {"method": self.config.align_peft, **counts}

    def _id2q_round(self, state: RunState) -> None:
        """Sample id→query queries for every item and keep those that round-trip (once per run)."""
        from tandem.training.pseudo import id2q_round

        if state.generated:  # a resumed run keeps the queries it generated before
            return
        t_round = time.perf_counter()
        cfg, data = self.config, self.data
        kept, stats = id2q_round(self.model, self.tokenizer, self.codes, data.target_ids[:, :-1].numpy(),
                                 set(data.groups.index), per_item=cfg.id2q_per_item, top_k=cfg.round_trip_k,
                                 max_query_length=cfg.max_query_length, max_input_length=cfg.max_input_length,
                                 seed=cfg.seed)
        state.generated = [[q, i] for q, i in kept]
        state.round_stats = stats
        log.info("id→query round: %s", stats)
        state.elapsed += time.perf_counter() - t_round
