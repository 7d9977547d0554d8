"""Staged training of the generative retriever v2 (pretrained encoder + ID-tree decoder).

The stages of the chapter, on a pretrained start (5.1.2: stage 1 is the pretrained encoder,
adapted to the catalog by :mod:`tandem.training.tree_adapt` before this trainer starts, so
there is no denoising stage; the caches handed in hold the adapted encoder's states):

* **init** — IDs by hierarchical balanced k-means over the encoder's pooled title vectors;
  node embeddings at the centroids, item embeddings at the titles' own vectors, the
  decoder's correction at zero: decoding already ranks like a search down the centroid tree.
* **memorise** (stage 2) — doc→id over item texts and title spans, encoder frozen, token
  states cached once (:mod:`tandem.training.state_cache`), verified by exact-match.
* **align** (stage 3) — query→id over training pairs with ``replay`` doc→id, cached states.
* **encoder** — LoRA on the encoder through ``peft`` (5.1.3) on the same mix, encoder live;
  merged at the end, and the item texts re-encoded once for the final check.

Augmentation, curriculum and FGSM (5.3.3, 5.3.4, 5.4.1) are off unless configured; their
pieces are in :mod:`tandem.training.tree_strategies`.

Every stage trains a softmax over *all* nodes of each ID position (all 54k items at the
last one — cheap next to the encoder), so scores of nodes under different parents stay
comparable; in-batch and hard negatives are special cases of that full softmax. With dev
queries given, dev figures are recorded at init and after each stage, so it is on record
whether training improved on the start.

The stages are declared in :meth:`TreeTrainer.stages` and run by the shared
:class:`~tandem.training.loop.StageLoop`; the checks (:class:`Checks`) and the time budget
(:class:`Budget`) are callbacks. Batches are planned and gradients reduced through
:attr:`TreeTrainer.parallel` (:class:`~tandem.training.loop.Parallel`), the one place a
distributed run plugs in.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from tandem.catalog.item import Item
from tandem.encoder import TextEncoder
from tandem.generative.tree_decoding import TreeIndex, tree_beam_search
from tandem.generative.tree_model import TreeDecoder
from tandem.ids.idmap import IdMap, item_text
from tandem.training.loop import Callback, Control, Parallel, Position, Stage, StageLoop
from tandem.training.state_cache import StateCache
from tandem.training.tree_config import TreeTrainConfig
from tandem.training.tree_data import Samples, batches, make_samples, title_spans
from tandem.training.tree_strategies import augmented_pairs, curriculum_parts, fgsm_tree_loss

log = logging.getLogger(__name__)
Dev = tuple[Mapping[str, str], Mapping[str, Mapping[str, int]]]


def decode_cached(model: TreeDecoder, index: TreeIndex, cache: StateCache, rows: np.ndarray, beams: Sequence[int],
                  batch_size: int = 64) -> np.ndarray:
    """Item rows ``[len(rows), beams[-1]]`` decoded from cached states (``-1`` pads)."""
    model.eval()
    out = np.full((len(rows), beams[-1]), -1, np.int64)
    for s in range(0, len(rows), batch_size):
        q, st, mk = cache.batch(rows[s : s + batch_size])
        nodes, _ = tree_beam_search(model, index, q, st, mk, beams=beams)
        out[s : s + len(nodes), : nodes.shape[1]] = nodes.numpy()
    return out


def memorisation(model: TreeDecoder, index: TreeIndex, cache: StateCache, samples: Samples, upper: int) -> dict[str, Any]:
    """doc→id verification: exact-match (top-1 is the item) and prefix-match per position."""
    top = decode_cached(model, index, cache, samples.rows, [upper] * (index.length - 1) + [1])[:, 0]
    got = index.paths[np.maximum(top, 0)]
    gold = index.paths[samples.items]
    per_level = [float(((got[:, p] == gold[:, p]) & (top >= 0)).mean()) for p in range(index.length)]
    return {"exact_match": per_level[-1], "prefix_match": per_level, "mean_prefix_match": float(np.mean(per_level)),
            "items_checked": len(samples)}


def dev_figures(model: TreeDecoder, index: TreeIndex, cache: StateCache, dev: Dev, item_ids: list[str],
                upper: int) -> dict[str, float]:
    """nDCG@10, R@10, R@100 (grade >= 4) of the decoder on dev queries, beam 100."""
    from tandem.eval.metrics import evaluate

    queries, qrels = dev
    cidx = cache.index()
    qids = [q for q in queries if q in qrels and queries[q] in cidx]
    rows = np.array([cidx[queries[q]] for q in qids], np.int64)
    top = decode_cached(model, index, cache, rows, [upper] * (index.length - 1) + [100])
    run = {q: [(item_ids[j], 0.0) for j in top[i] if j >= 0] for i, q in enumerate(qids)}
    res = evaluate(run, qrels, ["nDCG@10", "R(rel=4)@10", "R(rel=4)@100"], queries=qids)
    return {"ndcg@10": res.metrics["nDCG@10"], "r@10": res.metrics["R(rel=4)@10"], "r@100": res.metrics["R(rel=4)@100"]}


class TreeTrainer(Callback):
    """One v2 training run over a catalog, its ID map and training pairs; see the module docstring."""

    def __init__(self, config: TreeTrainConfig, items: Sequence[Item], id_map: IdMap, pairs: Sequence[tuple[str, str]],
                 encoder: TextEncoder, caches: tuple[StateCache, StateCache], *, dev: Dev | None = None,
                 echo: Callable[[str], None] = print, parallel: Parallel | None = None,
                 encode: Callable[[list[str]], StateCache] | None = None,
                 run_clock: tuple[float, float] | None = None) -> None:
        """``caches``: states of the item texts and of all query-like texts (spans, training and
        dev queries) under the frozen ``encoder``; ``id_map`` was built in the same space.
        ``parallel``: how batches are shared out and gradients reduced (one process by default).
        ``encode``: how texts are re-encoded after the encoder stage (default: all of them here;
        a distributed run shares them out across ranks).
        ``run_clock``: the run's start (``time.perf_counter``) and its encoding cost in seconds
        per item text, for ``total_minutes`` (see :meth:`stage_deadline`)."""
        self.config, self.encoder, self.dev, self.echo = config, encoder, dev, echo
        self.parallel = parallel or Parallel()
        self.encode = encode or (lambda texts: StateCache.build(self.encoder, texts))
        self.id_map = id_map
        self.item_ids = id_map.item_ids()
        self.index = TreeIndex(id_map.as_array())
        self.docs, self.queries = caches
        rng = random.Random(config.seed)
        pos = {iid: i for i, iid in enumerate(self.item_ids)}
        by_id = {it.item_id: it for it in items}
        texts = [item_text(by_id[i]) for i in self.item_ids]
        self.texts = texts
        self.doc_samples = make_samples("doc", texts, range(len(texts)), self.docs.index())
        qidx = self.queries.index()
        spans = [(s, i) for i, t in enumerate(texts) for s in title_spans(t, config.spans_per_item, rng)]
        self.span_samples = make_samples("span", [s for s, _ in spans], [i for _, i in spans], qidx)
        known = [(q, pos[i]) for q, i in pairs if i in pos]
        self.query_samples = make_samples("query", [q for q, _ in known], [i for _, i in known], qidx)
        aug = [(q, pos[i]) for q, i in augmented_pairs(pairs, config.augment_share, config.seed) if i in pos]
        self.aug_samples = make_samples("aug", [q for q, _ in aug], [i for _, i in aug], qidx)
        self.np_rng = np.random.default_rng(config.seed)
        self.check = self.doc_samples.subsample(config.check_items or len(self.doc_samples), self.np_rng)
        vectors = self.docs.pooled[self.doc_samples.rows[np.argsort(self.doc_samples.items)]]
        self.model = TreeDecoder(encoder.dim, self.index.nodes_per_position, config.decoder)
        with torch.no_grad():
            for p, table in enumerate(self.index.member_means(vectors)):
                self.model.nodes[p].copy_(torch.from_numpy(table))
        self.stage_records: dict[str, dict[str, Any]] = {}
        self.encoder_changed = False
        self.run_clock = run_clock
        self.check_seconds = self.eval_seconds = 0.0  # measured at init (see Checks)
        until = self.stage_deadline if config.total_minutes and run_clock else None
        self.budget = Budget(config.budget_minutes, self.parallel.any, until=until)
        self.loop = StageLoop([self.budget, self, Checks(self)])
        torch.manual_seed(config.seed)

    def stages(self) -> list[Stage]:
        """The declared training stages; each ``examples()`` gives its sample parts, drawn at its start."""
        cfg = self.config
        return [
            Stage("memorise", cfg.memorise_epochs, cfg.lr, examples=lambda: [self.doc_samples, self.span_samples],
                  batch_size=cfg.batch_size),
            Stage("align", cfg.align_epochs, cfg.lr, examples=lambda: self._with_replay(cfg.replay, cfg.curriculum),
                  batch_size=cfg.batch_size),
            Stage("encoder", cfg.lora_epochs, cfg.lora_lr, peft=True,
                  examples=lambda: self._with_replay(cfg.replay if cfg.lora_replay is None else cfg.lora_replay,
                                                     live=True),
                  batch_size=cfg.lora_batch_size),
        ]

    def stage_deadline(self) -> float:
        """When training must stop (``time.perf_counter``) for the run to end within
        ``total_minutes``: what follows the stages is re-encoding the item texts (if the encoder
        is adapted), the whole-catalog check (the init check's time scaled to every item), the
        dev figures and a minute for writing the folder."""
        assert self.run_clock is not None and self.config.total_minutes
        start, rate = self.run_clock
        n = len(self.texts)
        reencode = rate * n if self.config.lora_epochs else 0.0
        final = self.check_seconds * n / max(len(self.check), 1)
        return start + 60 * self.config.total_minutes - reencode - final - self.eval_seconds - 60.0

    def _with_replay(self, share: float, spans: bool = False, *, live: bool = False) -> list[Samples]:
        """query→id with a ``share`` of doc→id replay (a fresh sample per stage), then the rewritten
        queries (``augment_share``; ``live``: as ``query`` samples, whose texts the encoder stage
        reads from the query cache) and, with ``spans`` (the curriculum), the title spans."""
        n_replay = int(len(self.query_samples) * share / (1 - share))
        parts = [self.query_samples, self.doc_samples.subsample(n_replay, self.np_rng)]
        if len(self.aug_samples):
            parts.append(Samples("query", self.aug_samples.rows, self.aug_samples.items) if live else self.aug_samples)
        return [*parts, self.span_samples] if spans else parts

    def _optimizer(self, extra: Sequence[torch.nn.Parameter] = (), extra_lr: float = 0.0) -> torch.optim.Optimizer:
        cfg, m = self.config, self.model
        tables = {id(p) for p in m.nodes}
        groups: list[dict[str, Any]] = [
            {"params": [p for p in m.parameters() if id(p) not in tables], "lr": cfg.lr, "weight_decay": 0.01},
            {"params": list(m.nodes)[:-1], "lr": cfg.node_lr, "weight_decay": 0.0},
            {"params": [m.nodes[-1]], "lr": cfg.item_lr, "weight_decay": 0.0},
        ]
        if extra:
            groups.append({"params": list(extra), "lr": extra_lr, "weight_decay": 0.0})
        return torch.optim.AdamW([g for g in groups if g["lr"] > 0])

    # -- stage events (the trainer is a callback of its own loop) --------------------------

    def on_stage_begin(self, stage: Stage, at: Position, control: Control) -> None:
        """Draw the stage's samples and build its optimiser (a PEFT stage: LoRA on the encoder first)."""
        if control.skip:
            return
        assert stage.examples is not None
        self._parts: list[Samples] = stage.examples()
        if not stage.epochs or not sum(map(len, self._parts)):
            control.skip = True
            control.stop("nothing to train")
            return
        self._peft_params: list[torch.nn.Parameter] = []
        if stage.peft:
            from tandem.training.tree_lora import wrap_encoder

            self._peft_params = wrap_encoder(self.encoder, self.config)
            self.parallel.sync(self._peft_params)
        self._opt = self._optimizer(self._peft_params, stage.lr) if stage.peft else self._optimizer()
        self._losses: list[float] = []
        self._t0, self._seen, self._epochs, self._step = time.monotonic(), 0, 0, 0

    def _train_epoch(self, stage: Stage, epoch: int, control: Control) -> dict[str, Any]:
        from tandem.training.tree_lora import live_loss

        self._epochs = epoch + 1
        if stage.peft:
            self.encoder.model.eval()  # no dropout: the cached stages saw dropout-free states, LoRA still gets gradients
        self.model.train()
        caches = {"doc": self.docs, "span": self.queries, "query": self.queries, "aug": self.queries}
        params = [*self.model.parameters(), *self._peft_params]
        assert stage.batch_size is not None
        cfg = self.config
        parts = curriculum_parts(self._parts, epoch, stage.epochs) if cfg.curriculum and stage.name == "align" \
            else self._parts
        for batch, _ in batches(parts, stage.batch_size, self.np_rng, shard=self.parallel.shard):
            path = torch.from_numpy(self.index.paths[batch.items])
            if stage.peft:
                loss = live_loss(self, batch, path)
            else:
                q, st, mk = caches[batch.source].batch(batch.rows)
                eps = cfg.fgsm_epsilon if self._step % cfg.fgsm_every == 0 else 0.0
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.encoder.bf16 and q.device.type == "cpu"):
                    loss = fgsm_tree_loss(self.model, self.index.tables(), q, st, mk, path, beam=cfg.beam_negatives,
                                          epsilon=eps)
            self._step += 1
            self._opt.zero_grad(set_to_none=True)
            loss.backward()
            self.parallel.all_reduce(params)
            torch.nn.utils.clip_grad_norm_(params if stage.peft else self.model.parameters(), 1.0)
            self._opt.step()
            self._losses.append(self.parallel.reduce_loss(float(loss.detach())))
            self._seen += self.parallel.step_samples(len(batch))
            if self.loop.step_end(stage, control):
                break
        return {}

    def on_stage_end(self, stage: Stage, control: Control) -> None:
        """The stage's figures; after the PEFT stage, LoRA merged and the item texts re-encoded."""
        extra: dict[str, Any] = {}
        if stage.peft:
            from tandem.training.tree_lora import merge_encoder

            merge_encoder(self.encoder)
            extra = {"lora_rank": self.config.lora_rank, "lora_parameters": sum(p.numel() for p in self._peft_params)}
        seconds = time.monotonic() - self._t0
        self.stage_stats = {"epochs": self._epochs, "seconds": seconds,
                            "final_loss": float(np.mean(self._losses[-50:])) if self._losses else 0.0,
                            "samples": self._seen, "samples_per_s": self._seen / max(seconds, 1e-9),
                            "stop_reason": control.reason or "epochs done", **extra}
        if stage.peft:
            self.encoder_changed = True
            self.docs = self.encode(self.texts)  # the item texts under the adapted encoder
            self.doc_samples = make_samples("doc", self.texts, range(len(self.texts)), self.docs.index())
            self.check = Samples("doc", self.doc_samples.rows[np.searchsorted(self.doc_samples.items,
                                                                               self.check.items)], self.check.items)
            if self.dev is not None:
                self.queries = self.encode(list(self.dev[0].values()))

    def run(self) -> dict[str, Any]:
        """All stages, then the whole-catalog memorisation check; returns the summary."""
        t0 = time.monotonic()
        self.loop.run(self.stages(), self._train_epoch)
        final = memorisation(self.model, self.index, self.docs, self.doc_samples, self.config.check_beam)
        self.echo(f"[final] whole-catalog exact-match {final['exact_match']:.4f} over {final['items_checked']} items")
        return {"stages": self.stage_records, "final_memorisation": final, "train_seconds": time.monotonic() - t0,
                "items": len(self.item_ids), "pairs": len(self.query_samples), "spans": len(self.span_samples),
                "encoder_changed": self.encoder_changed,
                "parameters": sum(p.numel() for p in self.model.parameters()),
                "strategies": {"augment_share": self.config.augment_share, "augmented": len(self.aug_samples),
                               "curriculum": self.config.curriculum, "fgsm_epsilon": self.config.fgsm_epsilon,
                               "fgsm_every": self.config.fgsm_every}}


class Budget(Callback):
    """The run's wall-clock budget (``budget_minutes``, from the trainer's start): a stage does
    not start once it is spent, and the running one stops after the step that spends it."""

    def __init__(self, minutes: float | None, agree: Callable[[bool], bool] = bool, *,
                 until: Callable[[], float] | None = None) -> None:
        """``agree``: combines the ranks' answers (a distributed run stops all ranks at the same step).
        ``until``: a second deadline (``time.perf_counter``), asked each time (it may move as the
        run measures itself)."""
        self.deadline = time.perf_counter() + 60 * minutes if minutes else None
        self.agree, self.until = agree, until
        self.epoch = 0

    def over(self) -> bool:
        """Whether the budget is spent (on any rank)."""
        now = time.perf_counter()
        late = (self.deadline is not None and now > self.deadline) or (self.until is not None and now > self.until())
        return self.agree(late)

    def on_stage_begin(self, stage: Stage, at: Position, control: Control) -> None:
        if self.over():
            control.skip = True
            control.stop("time budget reached before the stage")

    def on_epoch_begin(self, stage: Stage, at: Position, control: Control) -> None:
        self.epoch = at.epoch

    def on_step_end(self, stage: Stage, control: Control) -> None:
        if self.over():
            control.stop(f"time budget reached in epoch {self.epoch + 1}", now=True)


class Checks(Callback):
    """Memorisation (and, with dev queries, dev figures) at init and after every stage that trained."""

    def __init__(self, trainer: TreeTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self) -> None:
        self.record("init", {})

    def on_stage_end(self, stage: Stage, control: Control) -> None:
        self.record(stage.name, self.trainer.stage_stats)

    def record(self, name: str, extra: dict[str, Any]) -> dict[str, Any]:
        """Check the model now and file the figures (with ``extra``) under stage ``name``; echo a line."""
        t, cfg = self.trainer, self.trainer.config
        t0 = time.perf_counter()
        rec: dict[str, Any] = {**extra, "memorisation": memorisation(t.model, t.index, t.docs, t.check, cfg.check_beam)}
        t1 = time.perf_counter()
        if t.dev is not None and cfg.eval_every_stage:
            rec["dev"] = dev_figures(t.model, t.index, t.queries, t.dev, t.item_ids, cfg.upper_beam)
        if name == "init":  # what the checks cost, for the run's total_minutes
            t.check_seconds, t.eval_seconds = t1 - t0, time.perf_counter() - t1
        t.stage_records[name] = rec
        dev = rec.get("dev")
        t.echo(f"[{name}] exact-match {rec['memorisation']['exact_match']:.3f}"
               + (f", dev nDCG@10 {dev['ndcg@10']:.4f} R@10 {dev['r@10']:.4f} R@100 {dev['r@100']:.4f}" if dev else "")
               + (f", {extra['seconds']:.0f} s, loss {extra['final_loss']:.4f}" if "seconds" in extra else ""))
        return rec
