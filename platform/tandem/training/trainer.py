"""The staged trainer of the generative retriever (seed chapter, sections 5.1.2 and 5.2).

Stage 1 ``pretrain``: span-corruption denoising on catalog text (from-scratch starts only).
Stage 2 ``memorise``: doc→id with balanced exposure and a progressive curriculum, LR
warm-up → main → refinement, memorisation verified after every epoch; stops at the target
exact-match or reports why not. Stage 3 ``align``: query→id (α) + id→query (1 − α) at a
lower LR, with doc→id replay, still verifying memorisation after every epoch. Optional
stage 4 ``id2q_round`` (``TrainConfig.id2q_round``): queries sampled from the model's
id→query direction, filtered by round-trip consistency, added to another alignment pass.

The strategies of sections 5.3-5.4 (pseudo-queries, negatives with a ranking loss,
curriculum, augmentation, FGSM / gradient-norm regularisation) are ``TrainConfig`` fields;
they shape the query→id examples of stages 3-4 and add loss terms there.

Every epoch ends with a checkpoint, so ``resume=True`` continues an interrupted run.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tandem.catalog.item import Item
from tandem.errors import InvalidInput
from tandem.training.config import TrainConfig
from tandem.training.data import (
    QueryGroups,
    QuerySpec,
    balanced_exposures,
    batches,
    collate,
    difficulty,
    encode_q2id,
    progressive_subset,
)
from tandem.training.denoise import span_corrupt
from tandem.training.objectives import (
    Example,
    Task,
    doc2id,
    id2q,
    multitask_loss,
    task_weights,
)
from tandem.training.verify import MemorisationReport, verify_memorisation

log = logging.getLogger(__name__)

STAGES = ("pretrain", "memorise", "align", "id2q_round")
#: Curriculum level of each pair source (see :mod:`tandem.training.curriculum`).
EXACT, TEMPLATE, REAL, REWRITTEN = 0, 1, 2, 3
#: In-batch negatives per example: each costs a decoder pass, and a batch of 64 would give 63.
IN_BATCH_CAP = 8
CHECKPOINT_DIR = "checkpoint"


@dataclass
class RunState:
    """Where a run stands; serialised into every checkpoint."""

    stage: int = 0
    epoch: int = 0
    """Next epoch to run within ``stage``."""
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


class StagedTrainer:
    """Trains a generative retriever on ``items`` (with IDs from ``id_map``) and query pairs.

    ``id_map`` needs ``codes(item_id) -> tuple[int, ...]`` (equal length for all items),
    ``save(path)``, ``version`` and ``len()`` — :class:`tandem.ids.IdMap` provides them.
    """

    def __init__(
        self,
        config: TrainConfig,
        items: Sequence[Item],
        id_map: Any,
        pairs: Sequence[tuple[str, str]],
        out: Path,
        *,
        pretrained: Path | None = None,
        device: str = "auto",
        progress: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        bm25_run: Mapping[str, Sequence[str]] | None = None,
        pseudo: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``bm25_run`` (query text → BM25-ranked item IDs) feeds ``hard_negatives``; when
        it is needed and not given, it is computed with Pyserini over ``items``.
        ``pseudo`` (item ID → pseudo-queries, e.g. from the pipeline's preparation step)
        replaces generating the template pseudo-queries here; ``pseudo_queries`` still caps
        how many per item are used."""
        if not items:
            raise InvalidInput("`catalog` is empty; nothing to train on")
        self.config = config
        self.items = list(items)
        self.id_map = id_map
        self.pairs = list(pairs)
        self.out = Path(out)
        self.pretrained = Path(pretrained) if pretrained else None
        self.progress = progress
        self.on_epoch = on_epoch
        self.bm25_run = bm25_run
        self.pseudo = pseudo
        self._state: RunState | None = None
        self._check_sample: list[Example] | None = None
        """The fixed ``check_items`` sample of doc→id examples (drawn at the first check)."""
        self._augmented = 0
        from tandem.generative.model import pick_device

        self.device = pick_device(device)
        from tandem.generative.model import use_bf16

        self.bf16 = use_bf16(config.precision, self.device)
        self.codes = self._code_matrix()
        unknown = sorted({item_id for _, item_id in self.pairs} - self.item_index.keys())
        if unknown:
            raise InvalidInput(f"`pairs` name {len(unknown)} item(s) outside the catalog, e.g. `{unknown[0]}`")

    # -- preparation --------------------------------------------------------------------------

    def _code_matrix(self) -> np.ndarray:
        index = {}
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
        self.item_index = index
        return np.asarray(rows, dtype=np.int64)

    def id_space(self) -> list[int]:
        """Codes per ID position (the ID map's declared space, reserved codes included)."""
        from tandem.generative.idmap import id_space

        return id_space(self.id_map, self.codes)

    def _build(self, resume_state: dict[str, Any] | None) -> None:
        """Tokenizer and model: from the checkpoint, a pretrained folder, or from scratch."""
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
        self.model.to(self.device)
        tok = self.tokenizer
        # One prefix token precedes the text, so texts get max_input_length - 1 tokens.
        self.text_ids = tok.encode_texts([it.text() for it in self.items], cfg.max_input_length - 1)
        self.doc_examples = [doc2id(tok, t, c, i) for i, (t, c) in enumerate(zip(self.text_ids, self.codes.tolist()))]
        queries = sorted({q for q, _ in self.pairs})
        tgt = dict(zip(queries, tok.encode_texts(queries, cfg.max_query_length), strict=True))
        # id→query learns from real queries only: the id→query round should sample queries
        # that look like shoppers', not like the templates.
        self.id2q_examples = [id2q(tok, tgt[q], self.codes[self.item_index[i]].tolist(), self.item_index[i])
                              for q, i in self.pairs]
        self.groups = QueryGroups()
        self.q2id_specs = [self._spec(q, self.item_index[i], REAL) for q, i in self.pairs]
        if cfg.pseudo_queries:
            from tandem.training.pseudo import template_queries

            for idx, item in enumerate(self.items):
                given = self.pseudo.get(item.item_id) if self.pseudo is not None else None
                queries = given[: cfg.pseudo_queries] if given is not None else \
                    template_queries(item, cfg.pseudo_queries, cfg.seed)
                for q in queries:
                    self.q2id_specs.append(self._spec(q, idx, TEMPLATE))
        if cfg.curriculum:
            self.q2id_specs += [self._spec(it.title.lower(), idx, EXACT) for idx, it in enumerate(self.items)]
        self.hard: dict[int, list[int]] = self._hard_negatives() if cfg.hard_negatives else {}
        self.target_ids = torch.tensor([[*tok.encode_id(c), tok.eos_id] for c in self.codes.tolist()],
                                       dtype=torch.long)
        self.substitutes: dict[str, list[str]] = {}
        if cfg.augment_share:
            from tandem.eval.robustness import cooccurrence_synonyms

            self.substitutes = cooccurrence_synonyms([it.text() for it in self.items])
        self.difficulty = difficulty(np.array([len(t) for t in self.text_ids]), self.codes)

    def _spec(self, text: str, item: int, level: int) -> QuerySpec:
        return QuerySpec(text, item, self.groups.add(text, item), level)

    def _hard_negatives(self) -> dict[int, list[int]]:
        """Group → BM25-hard negatives, from the given run or one computed here."""
        from tandem.training.negatives import bm25_run, hard_negatives

        texts = list(self.groups.index)
        run = self.bm25_run
        if run is None:
            depth = self.config.hard_negatives + max(len(p) for p in self.groups.positives) + 10
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:  # only the run is kept, not the index
                run = bm25_run(self.items, texts, depth, Path(tmp) / "bm25")
        ids = [it.item_id for it in self.items]
        positives = {t: {ids[i] for i in self.groups.positives[g]} for t, g in self.groups.index.items()}
        by_text = hard_negatives(run, positives, self.item_index, self.config.hard_negatives)
        return {self.groups.index[t]: negs for t, negs in by_text.items() if negs}

    # -- epochs --------------------------------------------------------------------------------

    def _epoch_examples(self, stage: str, epoch: int, rng: np.random.Generator) -> list[Example]:
        cfg = self.config
        if stage == "pretrain":
            out = []
            for i, ids in enumerate(self.text_ids):
                ex = span_corrupt(ids[:-1], self.tokenizer.sentinel_ids, self.tokenizer.eos_id, rng,
                                  cfg.noise_density, cfg.mean_span, item=i)
                if ex is not None:
                    out.append(ex)
            return out
        if stage == "memorise":
            subset = progressive_subset(self.difficulty, epoch, cfg.progressive_epochs, cfg.progressive_start)
            return [self.doc_examples[i] for i in balanced_exposures(subset, cfg.exposures, rng)]
        self._augmented = 0
        replay: list[Example] = []
        if cfg.replay_exposures:
            order = balanced_exposures(np.arange(len(self.items)), cfg.replay_exposures, rng)
            replay = self._replay(order, rng)
        return self._q2id_examples(stage, epoch, rng) + self.id2q_examples + replay

    def _q2id_examples(self, stage: str, epoch: int, rng: np.random.Generator) -> list[Example]:
        """This epoch's query→id examples: curriculum levels, augmentation, adaptive sampling."""
        from tandem.training import curriculum

        cfg = self.config
        specs = list(self.q2id_specs)
        if stage == "id2q_round":
            specs += [self._spec(q, int(i), TEMPLATE) for q, i in self._generated]
        top = REWRITTEN
        if cfg.curriculum and stage == "align":
            specs = [specs[i] for i in curriculum.curriculum_order([s.level for s in specs], epoch,
                                                                   cfg.align_epochs)]
            top = curriculum.max_level(epoch, cfg.align_epochs)
        if cfg.augment_share and top >= REWRITTEN:
            from tandem.training.augment import mix_augmented, rewrite_query

            specs, n = mix_augmented(specs, lambda s, r: s.rewritten(rewrite_query(s.text, r)), cfg.augment_share,
                                     rng)
            self._augmented += n
        examples = encode_q2id(self.tokenizer, specs, self.codes, cfg.max_input_length, self.hard)
        if cfg.adaptive_alpha and examples:
            acc = curriculum.example_accuracy(self.model, self.tokenizer, examples, self.device)
            examples = [examples[i] for i in curriculum.adaptive_sample(acc, cfg.adaptive_alpha, len(examples), rng)]
        return examples

    def _replay(self, order: np.ndarray, rng: np.random.Generator) -> list[Example]:
        """doc→id replay of items ``order``; with augmentation, a capped share perturbed."""
        cfg = self.config
        out = [self.doc_examples[i] for i in order]
        if not cfg.augment_share:
            return out
        from tandem.training.augment import mix_augmented, perturb_document

        tok = self.tokenizer

        def perturb(ex: Example, r: np.random.Generator) -> Example:
            text = perturb_document(self.items[ex.item].text(), r, self.substitutes)
            ids = tok.encode_texts([text], cfg.max_input_length - 1)[0]
            return doc2id(tok, ids, self.codes[ex.item].tolist(), ex.item)

        out, n = mix_augmented(out, perturb, cfg.augment_share, rng)
        self._augmented += n
        return out

    @property
    def _generated(self) -> list[list[Any]]:
        return self._state.generated if self._state is not None else []

    def _lr(self, stage: str, epoch: int, step_in_stage: int, state: RunState) -> float:
        cfg = self.config
        if stage == "pretrain":
            base = cfg.pretrain_lr
        elif stage in ("align", "id2q_round"):
            base = cfg.align_peft_lr if cfg.align_peft != "none" else cfg.align_lr
        else:
            sched = cfg.memorise_lr
            late = epoch >= int(0.8 * cfg.memorise_max_epochs)
            if epoch < sched.warmup_epochs:
                base = sched.warmup
            elif state.last_exact_match >= sched.refine_at or late:
                base = sched.refinement
            else:
                base = sched.main
        ramp = cfg.memorise_lr.ramp_steps
        if ramp and step_in_stage < ramp:
            return base * (step_in_stage + 1) / ramp
        return base

    def _run_epoch(self, stage_idx: int, epoch: int, optimizer: Any, step0: int, state: RunState,
                   seconds_left: float | None = None) -> dict[str, Any]:
        """One epoch of ``stage_idx``; stops early (``truncated``) once ``seconds_left`` run out."""
        import torch
        from tqdm.auto import tqdm

        cfg = self.config
        stage = STAGES[stage_idx]
        rng = np.random.default_rng([cfg.seed, stage_idx, epoch])
        torch.manual_seed(cfg.seed * 1_000_003 + stage_idx * 1009 + epoch)
        examples = self._epoch_examples(stage, epoch, rng)
        weights = task_weights(cfg.alpha, doc2id_weight=1.0 if stage == "memorise" else cfg.replay_weight)
        n_batches = (len(examples) + cfg.batch_size - 1) // cfg.batch_size
        self.model.train()
        losses: list[float] = []
        task_sums: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        bar = tqdm(batches(examples, cfg.batch_size, rng), total=n_batches, disable=not self.progress,
                   desc=f"{stage} epoch {epoch + 1}", leave=False, unit="batch")
        lr = 0.0
        done = seen = 0
        for b, batch in enumerate(bar):
            if seconds_left is not None and time.perf_counter() - t0 > seconds_left:
                break
            done += 1
            seen += len(batch)
            lr = self._lr(stage, epoch, step0 + b, state)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs = collate(batch, self.tokenizer.pad_id, self.device)
            loss, parts = self._batch_loss(stage, batch, inputs, weights, step0 + b, rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
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
            "stage": stage, "epoch": epoch + 1, "steps": done, "examples": seen, "lr": lr,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "task_loss": {k: round(float(np.mean(v)), 4) for k, v in task_sums.items()},
            "seconds": round(seconds, 2), "samples_per_s": round(seen / max(seconds, 1e-9), 1),
        }
        if done < n_batches:
            record["truncated"] = f"time budget: {done} of {n_batches} steps"
        if stage in ("align", "id2q_round") and self.config.augment_share:
            record["augmented"] = self._augmented
        return record

    def _batch_loss(self, stage: str, batch: Sequence[Example], inputs: dict[str, Any], weights: Mapping[Task, float],
                    step: int, rng: np.random.Generator) -> tuple[Any, dict[str, float]]:
        """The multi-task loss, plus in stages 3-4 the configured FGSM / gradient-norm and
        ranking terms; returns the loss and its named parts (unweighted, for the curves)."""
        import torch

        from tandem.training.adversarial import robust_loss

        cfg = self.config
        aligned = stage in ("align", "id2q_round")
        seen: dict[str, Any] = {}

        def loss_fn(logits: Any) -> Any:
            loss, parts = multitask_loss(logits, inputs["labels"], inputs["tasks"], weights)
            seen.setdefault("logits", logits)  # the clean pass comes first
            seen.setdefault("parts", parts)
            return loss

        eps = cfg.fgsm_epsilon if aligned and step % cfg.fgsm_every == 0 else 0.0
        gn = cfg.grad_norm_weight if aligned else 0.0
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if eps or gn:
                loss, rp = robust_loss(self.model, inputs, loss_fn, epsilon=eps, adv_weight=cfg.fgsm_weight,
                                       grad_norm_weight=gn)
            else:
                loss, rp = loss_fn(self.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                              decoder_input_ids=inputs["decoder_input_ids"]).logits), None
            parts = {t.name.lower(): v for t, v in seen["parts"].items()}
            if rp is not None and rp.adversarial is not None:
                parts["adversarial"] = rp.adversarial
            if rp is not None and rp.grad_norm is not None:
                parts["grad_norm"] = rp.grad_norm
            if aligned and cfg.rank_loss != "none":
                rank, rank_parts = self._rank_loss(batch, inputs, seen["logits"], rng)
                loss = loss + rank
                parts.update(rank_parts)
        return loss, parts

    def _rank_loss(self, batch: Sequence[Example], inputs: dict[str, Any], logits: Any,
                   rng: np.random.Generator) -> tuple[Any, dict[str, float]]:
        """``λ_hard·L_hard + λ_random·L_random + λ_in_batch·L_in_batch`` over the batch's query→id rows."""
        from tandem.training.negatives import in_batch_negatives, random_negatives, ranking_terms

        cfg = self.config
        rows = [i for i, e in enumerate(batch) if e.task == Task.Q2ID]
        pos_sets = [self.groups.positives[batch[i].group] for i in rows]
        kinds: list[tuple[str, float, list[list[int]]]] = []
        if cfg.hard_negatives:
            kinds.append(("hard", cfg.lambda_hard, [list(batch[i].hard[: cfg.hard_negatives]) for i in rows]))
        if cfg.random_negatives:
            kinds.append(("random", cfg.lambda_random,
                          [random_negatives(len(self.items), p, cfg.random_negatives, rng) for p in pos_sets]))
        if cfg.in_batch_negatives:
            inb = in_batch_negatives([batch[i].item for i in rows], pos_sets)
            kinds.append(("in_batch", cfg.lambda_in_batch, [n[:IN_BATCH_CAP] for n in inb]))
        return ranking_terms(self.model, inputs, logits, rows, kinds, self.target_ids, self.tokenizer.pad_id,
                             cfg.rank_loss, cfg.rank_margin)

    def verify(self, everything: bool = False) -> MemorisationReport:
        """Memorisation check of the current model: over the ``check_items`` sample after an
        epoch, over the whole catalog with ``everything``."""
        examples = self.doc_examples
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
        import torch

        from tandem.training.checkpoint import load_optimizer, read_state, save_checkpoint
        from tandem.training.report import write_curve, write_summary

        ckpt = self.out / CHECKPOINT_DIR
        saved = read_state(ckpt) if resume else None
        if saved is not None and saved.get("config") != self.config.model_dump(mode="json"):
            raise InvalidInput(f"`resume`: the checkpoint in {ckpt} was made with a different configuration")
        self._build(saved)
        state = RunState(**saved["run"]) if saved else RunState()
        self._state = state
        first_stage = 1 if (self.pretrained is not None) else 0
        if state.stage < first_stage:
            state.stage = first_stage
        wall0 = time.perf_counter()
        while state.stage < len(STAGES):
            stage = STAGES[state.stage]
            lr0 = {"pretrain": self.config.pretrain_lr, "memorise": self.config.memorise_lr.main,
                   "align": self.config.align_lr, "id2q_round": self.config.align_lr}[stage]
            deadline = self._deadline(stage, first_stage)
            in_time = deadline is None or state.elapsed < deadline
            if stage == "id2q_round" and self._max_epochs(stage) and not state.generated and in_time:
                t_round = time.perf_counter()
                self._id2q_round(state)
                state.elapsed += time.perf_counter() - t_round
            peft_stage = stage in ("align", "id2q_round") and self.config.align_peft != "none"
            # A PEFT stage builds each epoch's optimizer over that epoch's fresh adapter.
            optimizer = None if peft_stage else torch.optim.AdamW(self.model.parameters(), lr=lr0,
                                                                  weight_decay=self.config.weight_decay)
            if saved is not None and state.epoch > 0 and optimizer is not None:
                load_optimizer(ckpt, optimizer, saved)
            saved = None
            max_epochs = self._max_epochs(stage)
            step = sum(r["steps"] for r in state.epochs if r["stage"] == stage)
            while state.epoch < max_epochs:
                if deadline is not None and state.elapsed >= deadline:  # spent by the stages before
                    state.stop_reasons[stage] = self._budget_reason(stage, state)
                    state.stage, state.epoch = state.stage + 1, 0
                    break
                left = None if deadline is None else deadline - state.elapsed
                t_epoch = time.perf_counter()
                if peft_stage:
                    optimizer = self._wrap_peft()
                record = self._run_epoch(state.stage, state.epoch, optimizer, step, state, left)
                if peft_stage:
                    record["peft"] = self._merge_peft()
                step += record["steps"]
                state.samples += record["examples"]
                state.seconds += record["seconds"]
                if stage != "pretrain":
                    t_check = time.perf_counter()
                    report = self.verify()
                    state.last_exact_match = report.exact_match
                    record["memorisation"] = report.as_dict()
                    record["check_seconds"] = round(time.perf_counter() - t_check, 2)
                state.elapsed += time.perf_counter() - t_epoch  # examples, steps and the check
                state.epochs.append(record)
                state.epoch += 1
                done = stage == "memorise" and state.last_exact_match >= self.config.memorise_target
                if done:
                    state.stop_reasons[stage] = (
                        f"exact-match {state.last_exact_match:.3f} >= target {self.config.memorise_target}"
                    )
                    state.epoch = max_epochs
                elif deadline is not None and (state.elapsed >= deadline or "truncated" in record):
                    state.stop_reasons[stage] = self._budget_reason(stage, state)
                    state.epoch = max_epochs
                elif state.epoch >= max_epochs:
                    state.stop_reasons[stage] = self._why_stopped(stage, state)
                if state.epoch >= max_epochs:
                    state.stage, state.epoch = state.stage + 1, 0
                save_checkpoint(ckpt, self.model, self.tokenizer, optimizer if state.epoch and not peft_stage else None,
                                {"run": state.__dict__, "config": self.config.model_dump(mode="json"),
                                 "id_space": list(self.tokenizer.id_space)})
                self._log_epoch(record)  # after the checkpoint: an interrupt here loses nothing
                if state.stage != STAGES.index(stage):
                    break
            else:
                state.stage, state.epoch = state.stage + 1, 0
        final = None
        if self.config.check_items is not None and self.config.check_items < len(self.doc_examples):
            t_check = time.perf_counter()
            final = self.verify(everything=True).as_dict() | {"seconds": round(time.perf_counter() - t_check, 1)}
        summary = self._summary(state, time.perf_counter() - wall0, final)
        from tandem.generative.artifacts import save_artifact

        write_summary(self.out, summary)
        write_curve(self.out, state.steps, state.epochs, STAGES)
        save_artifact(self.out, self.model, self.tokenizer, self.id_map,
                      max_input_length=self.config.max_input_length, training=summary)
        return summary

    def _wrap_peft(self) -> Any:
        """Wrap the model in a fresh stage-3 adapter; returns the adapter's optimizer."""
        import torch

        from tandem.training.peft_methods import PeftSpec, apply_peft

        cfg = self.config
        spec = PeftSpec(method=cfg.align_peft, rank=cfg.align_peft_rank, alpha=2.0 * cfg.align_peft_rank)
        self.model = apply_peft(self.model, spec)
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=cfg.align_peft_lr, weight_decay=cfg.weight_decay)

    def _merge_peft(self) -> dict[str, Any]:
        """Fold the epoch's adapter into the weights; returns its trainable-parameter counts."""
        from tandem.training.peft_methods import merge, trainable_parameters

        counts = trainable_parameters(self.model)
        self.model = merge(self.model)
        return {"method": self.config.align_peft, **counts}

    def _deadline(self, stage: str, first_stage: int) -> float | None:
        """Seconds of the run by which ``stage`` must end under ``time_budget_minutes``: the
        budget times the cumulative share of the stages up to it, over the stages that run."""
        cfg = self.config
        if cfg.time_budget_minutes is None:
            return None
        running = [s for s in STAGES[first_stage:] if self._max_epochs(s)]
        total = sum(cfg.budget_shares.get(s, 0.0) for s in running)
        if stage not in running or total <= 0:
            return cfg.time_budget_minutes * 60
        upto = running[: running.index(stage) + 1]
        return cfg.time_budget_minutes * 60 * sum(cfg.budget_shares.get(s, 0.0) for s in upto) / total

    def _budget_reason(self, stage: str, state: RunState) -> str:
        done = sum(1 for r in state.epochs if r["stage"] == stage)
        reason = f"time budget ({self.config.time_budget_minutes} min) reached after {done} epoch(s)"
        if stage == "memorise" and state.last_exact_match < self.config.memorise_target:
            reason += f"; exact-match {state.last_exact_match:.3f} < target {self.config.memorise_target}"
        return reason

    def _max_epochs(self, stage: str) -> int:
        cfg = self.config
        return {"pretrain": cfg.pretrain_epochs, "memorise": cfg.memorise_max_epochs, "align": cfg.align_epochs,
                "id2q_round": cfg.id2q_epochs if cfg.id2q_round else 0}[stage]

    def _id2q_round(self, state: RunState) -> None:
        """Sample id→query queries for every item and keep those that round-trip."""
        from tandem.training.pseudo import id2q_round

        cfg = self.config
        kept, stats = id2q_round(self.model, self.tokenizer, self.codes, self.target_ids[:, :-1].numpy(),
                                 set(self.groups.index), per_item=cfg.id2q_per_item, top_k=cfg.round_trip_k,
                                 max_query_length=cfg.max_query_length, max_input_length=cfg.max_input_length,
                                 seed=cfg.seed)
        state.generated = [[q, i] for q, i in kept]
        state.round_stats = stats
        log.info("id→query round: %s", stats)

    def _why_stopped(self, stage: str, state: RunState) -> str:
        if stage != "memorise":
            return f"ran its {self._max_epochs(stage)} epochs"
        return (
            f"target exact-match {self.config.memorise_target} not reached in {self.config.memorise_max_epochs} "
            f"epochs (reached {state.last_exact_match:.3f}); raise `memorise_max_epochs`, `exposures` "
            "or the model size (capacity), or check for duplicate item texts with distinct IDs"
        )

    def _log_epoch(self, record: dict[str, Any]) -> None:
        mem = record.get("memorisation", {})
        log.info("%s epoch %d: loss %.4f, %.0f samples/s%s", record["stage"], record["epoch"], record["loss"],
                 record["samples_per_s"], f", exact-match {mem['exact_match']:.3f}" if mem else "")
        if self.on_epoch is not None:
            self.on_epoch(record)

    def _summary(self, state: RunState, wall: float, final: dict[str, Any] | None = None) -> dict[str, Any]:
        """``final``: the whole-catalog memorisation check when the epochs checked a sample."""
        import torch

        from tandem.generative.model import count_parameters

        per_stage: dict[str, Any] = {}
        for name in STAGES:
            recs = [r for r in state.epochs if r["stage"] == name]
            if not recs:
                continue
            entry: dict[str, Any] = {"epochs": len(recs), "seconds": round(sum(r["seconds"] for r in recs), 1),
                                     "final_loss": round(recs[-1]["loss"], 4),
                                     "stop_reason": state.stop_reasons.get(name, "")}
            if "memorisation" in recs[-1]:
                entry["memorisation"] = recs[-1]["memorisation"]
            per_stage[name] = entry
        mem = per_stage.get("memorise", {}).get("memorisation", {})
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {
            "config": self.config.model_dump(mode="json"),
            "device": str(self.device), "bf16_autocast": self.bf16,
            "items": len(self.items), "pairs": len(self.pairs),
            "id_map_version": str(getattr(self.id_map, "version", "")),
            "vocab_size": len(self.tokenizer), "parameters": count_parameters(self.model),
            "stages": per_stage,
            "memorisation_reached_target": bool(mem and mem["exact_match"] >= self.config.memorise_target),
            "final_memorisation": final or (state.epochs[-1].get("memorisation") if state.epochs else None),
            "checked_items_per_epoch": min(self.config.check_items or len(self.doc_examples), len(self.doc_examples)),
            "train_seconds": round(state.seconds, 1), "wall_seconds_this_session": round(wall, 1),
            "samples": state.samples,
            "samples_per_s": round(state.samples / max(state.seconds, 1e-9), 1),
            "peak_rss_mb": round(peak_rss_mb, 1),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
            "epochs": state.epochs,
            "strategies": self._strategy_summary(state),
        }

    def _strategy_summary(self, state: RunState) -> dict[str, Any]:
        """Pair counts per source and what the id→query round kept (for the ablation)."""
        levels = [s.level for s in getattr(self, "q2id_specs", [])]
        return {
            "q2id_pairs": {"exact": levels.count(EXACT), "template": levels.count(TEMPLATE),
                           "real": levels.count(REAL)},
            "hard_negative_queries": len(getattr(self, "hard", {})),
            "id2q_round": state.round_stats,
            "align_peft": next((r["peft"] for r in reversed(state.epochs) if "peft" in r), None),
        }
