"""Staged training of the generative retriever v2 (pretrained encoder + ID-tree decoder).

The stages of the chapter, on a pretrained start (5.1.2: stage 1 *is* the pretrained
encoder, so there is no denoising stage):

* **init** — IDs by hierarchical balanced k-means over the encoder's pooled title vectors;
  node embeddings at the centroids, item embeddings at the titles' own vectors, the
  decoder's correction at zero: decoding already ranks like a search down the centroid tree.
* **memorise** (stage 2) — doc→id over item texts and title spans, encoder frozen, token
  states cached once (:mod:`tandem.training.state_cache`), verified by exact-match.
* **align** (stage 3) — query→id over training pairs with ``replay`` doc→id, cached states.
* **encoder** — LoRA on the encoder through ``peft`` (5.1.3) on the same mix, encoder live;
  merged at the end, and the item texts re-encoded once for the final check.

Every stage trains a softmax over *all* nodes of each ID position (all 54k items at the
last one — cheap next to the encoder), so scores of nodes under different parents stay
comparable; in-batch and hard negatives are special cases of that full softmax. With dev
queries given, dev figures are recorded at init and after each stage, so it is on record
whether training improved on the start.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tandem.catalog.item import Item
from tandem.encoder import TextEncoder
from tandem.generative.tree_decoding import TreeIndex, tree_beam_search
from tandem.generative.tree_model import TreeDecoder, tree_loss
from tandem.ids.idmap import IdMap, item_text
from tandem.training.state_cache import StateCache
from tandem.training.tree_config import TreeTrainConfig
from tandem.training.tree_data import Samples, batches, make_samples, title_spans

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


class TreeTrainer:
    """One v2 training run over a catalog, its ID map and training pairs; see the module docstring."""

    def __init__(self, config: TreeTrainConfig, items: Sequence[Item], id_map: IdMap, pairs: Sequence[tuple[str, str]],
                 encoder: TextEncoder, caches: tuple[StateCache, StateCache], *, dev: Dev | None = None,
                 echo: Callable[[str], None] = print) -> None:
        """``caches``: states of the item texts and of all query-like texts (spans, training and
        dev queries) under the frozen ``encoder``; ``id_map`` was built in the same space."""
        self.config, self.encoder, self.dev, self.echo = config, encoder, dev, echo
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
        self.np_rng = np.random.default_rng(config.seed)
        self.check = self.doc_samples.subsample(config.check_items or len(self.doc_samples), self.np_rng)
        vectors = self.docs.pooled[self.doc_samples.rows[np.argsort(self.doc_samples.items)]]
        self.model = TreeDecoder(encoder.dim, self.index.nodes_per_position, config.decoder)
        with torch.no_grad():
            for p, table in enumerate(self.index.member_means(vectors)):
                self.model.nodes[p].copy_(torch.from_numpy(table))
        self.stages: dict[str, dict[str, Any]] = {}
        self.encoder_changed = False
        self._deadline = time.monotonic() + 60 * config.budget_minutes if config.budget_minutes else None
        torch.manual_seed(config.seed)

    # -- checks ---------------------------------------------------------------------------

    def _record(self, stage: str, **extra: Any) -> dict[str, Any]:
        cfg = self.config
        rec: dict[str, Any] = {**extra, "memorisation": memorisation(self.model, self.index, self.docs, self.check,
                                                                     cfg.check_beam)}
        if self.dev is not None and cfg.eval_every_stage:
            rec["dev"] = dev_figures(self.model, self.index, self.queries, self.dev, self.item_ids, cfg.upper_beam)
        self.stages[stage] = rec
        dev = rec.get("dev")
        self.echo(f"[{stage}] exact-match {rec['memorisation']['exact_match']:.3f}"
                  + (f", dev nDCG@10 {dev['ndcg@10']:.4f} R@10 {dev['r@10']:.4f} R@100 {dev['r@100']:.4f}" if dev else "")
                  + (f", {extra['seconds']:.0f} s, loss {extra['final_loss']:.4f}" if "seconds" in extra else ""))
        return rec

    def _over_budget(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    # -- stages ---------------------------------------------------------------------------

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

    def _cached_stage(self, name: str, parts: list[Samples], epochs: int) -> None:
        if epochs == 0 or not sum(map(len, parts)):
            return
        cfg = self.config
        opt = self._optimizer()
        caches = {"doc": self.docs, "span": self.queries, "query": self.queries}
        t0, losses, seen, stop = time.monotonic(), [], 0, "epochs done"
        for epoch in range(epochs):
            self.model.train()
            for batch, _ in batches(parts, cfg.batch_size, self.np_rng):
                q, st, mk = caches[batch.source].batch(batch.rows)
                losses.append(self._step(opt, q, st, mk, batch.items))
                seen += len(batch)
                if self._over_budget():
                    stop = f"time budget reached in epoch {epoch + 1}"
                    break
            if self._over_budget():
                break
        self._record(name, epochs=epoch + 1, seconds=time.monotonic() - t0, final_loss=float(np.mean(losses[-50:])),
                     samples=seen, samples_per_s=seen / max(time.monotonic() - t0, 1e-9), stop_reason=stop)

    def _step(self, opt: torch.optim.Optimizer, q: torch.Tensor, st: torch.Tensor, mk: torch.Tensor,
              items: np.ndarray) -> float:
        path = torch.from_numpy(self.index.paths[items])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.encoder.bf16 and q.device.type == "cpu"):
            loss = tree_loss(self.model, self.index.tables(), q, st, mk, path, beam=self.config.beam_negatives)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    def memorise(self) -> None:
        """Stage 2: doc→id over item texts and title spans."""
        self._cached_stage("memorise", [self.doc_samples, self.span_samples], self.config.memorise_epochs)

    def align(self) -> None:
        """Stage 3: query→id with doc→id replay."""
        n_replay = int(len(self.query_samples) * self.config.replay / (1 - self.config.replay))
        parts = [self.query_samples, self.doc_samples.subsample(n_replay, self.np_rng)]
        self._cached_stage("align", parts, self.config.align_epochs)

    def adapt_encoder(self) -> None:
        """Encoder stage: LoRA (peft) on query→id with doc→id replay; merged when done."""
        from tandem.training.tree_lora import lora_stage

        cfg = self.config
        if cfg.lora_epochs == 0 or not len(self.query_samples) or self._over_budget():
            return
        rec = lora_stage(self, cfg)
        self.encoder_changed = True
        self.docs = StateCache.build(self.encoder, self.texts)  # the item texts under the adapted encoder
        self.doc_samples = make_samples("doc", self.texts, range(len(self.texts)), self.docs.index())
        self.check = Samples("doc", self.doc_samples.rows[np.searchsorted(self.doc_samples.items, self.check.items)],
                             self.check.items)
        if self.dev is not None:
            self.queries = StateCache.build(self.encoder, list(self.dev[0].values()))
        self._record("encoder", **rec)

    def run(self) -> dict[str, Any]:
        """All stages, then the whole-catalog memorisation check; returns the summary."""
        t0 = time.monotonic()
        self._record("init")
        self.memorise()
        self.align()
        self.adapt_encoder()
        final = memorisation(self.model, self.index, self.docs, self.doc_samples, self.config.check_beam)
        self.echo(f"[final] whole-catalog exact-match {final['exact_match']:.4f} over {final['items_checked']} items")
        return {"stages": self.stages, "final_memorisation": final, "train_seconds": time.monotonic() - t0,
                "items": len(self.item_ids), "pairs": len(self.query_samples), "spans": len(self.span_samples),
                "encoder_changed": self.encoder_changed,
                "parameters": sum(p.numel() for p in self.model.parameters())}
