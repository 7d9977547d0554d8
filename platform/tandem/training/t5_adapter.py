"""Adapter training on a v1 (T5) base: LoRA / IA³ with replay and optional EWC or distillation.

:func:`tandem.training.adapter.train_adapter` dispatches here for T5 bases (see that module
for the method); v2 bases go to :mod:`tandem.training.tree_adapter_train`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tandem.catalog.item import Item
from tandem.errors import InvalidInput
from tandem.training.adapter_config import AdapterConfig, pseudo_query_source, split_items
from tandem.training.adapter_metrics import AdapterMetrics
from tandem.training.objectives import Example, Task, doc2id, multitask_loss, q2id

log = logging.getLogger(__name__)

#: Loss weights of adapter training: memorising the text and answering queries count alike.
ADAPTER_WEIGHTS = {Task.DOC2ID: 1.0, Task.Q2ID: 1.0}


class T5AdapterRun:
    """One adapter training run on a v1 T5 base (state shared by its steps)."""

    def __init__(self, base_dir: Path, cfg: AdapterConfig, echo: Callable[[str], None], progress: bool) -> None:
        from tandem.generative.artifacts import load_artifact
        from tandem.generative.model import pick_device, use_bf16

        if not cfg.peft.mergeable:
            raise InvalidInput(f"`peft.method` {cfg.peft.method} cannot be merged for serving; use lora or ia3")
        if cfg.ewc_lambda > 0 and cfg.peft.method != "lora":
            raise InvalidInput("`ewc_lambda` > 0 needs `peft.method` lora (EWC acts on LoRA's weight update)")
        self.cfg, self.echo, self.progress = cfg, echo, progress
        self.device = pick_device(cfg.device)
        self.bf16 = use_bf16(cfg.precision, self.device)
        self.artifact = load_artifact(base_dir, self.device)
        self.tok = self.artifact.tokenizer
        self.text_len = self.artifact.max_input_length - 1
        self.queries, self.query_source = pseudo_query_source(cfg.pseudo_queries, cfg.min_query_words)

    # -- examples ---------------------------------------------------------------------------

    def _examples(self, items: Sequence[Item], codes: Sequence[Sequence[int]], n_queries: int,
                  first_index: int) -> tuple[list[Example], list[Example]]:
        """doc→id examples (one per item) and pseudo-query→id examples (``n_queries`` each)."""
        texts = self.tok.encode_texts([it.text() for it in items], self.text_len)
        docs = [doc2id(self.tok, t, c, first_index + i) for i, (t, c) in enumerate(zip(texts, codes, strict=True))]
        pairs = [(q, i) for i, it in enumerate(items) if n_queries > 0
                 for q in self.queries(it, n_queries, self.cfg.seed)]
        encoded = self.tok.encode_texts([q for q, _ in pairs], self.text_len) if pairs else []
        qs = [q2id(self.tok, e, codes[i], first_index + i) for e, (_, i) in zip(encoded, pairs, strict=True)]
        return docs, qs

    # -- checks -----------------------------------------------------------------------------

    def _eval_query(self, item: Item) -> str:
        """A held-out pseudo-query: the one after those trained on (the title when there is none).

        Training uses the first ``queries_per_item`` queries of an item (old items: half as
        many), so this phrasing was never seen in training.
        """
        n = self.cfg.queries_per_item
        queries = self.queries(item, n + 1, self.cfg.seed)
        return queries[n] if len(queries) > n else item.title

    def _checks(self, artifact: Any, new: list[Item], old: list[Item], new_codes: list[Sequence[int]],
                old_codes: list[Sequence[int]]) -> dict[str, float]:
        """R@k on held-out pseudo-queries and doc→id exact-match, for new and (sampled) old items."""
        from tandem.generative.retriever import GenerativeRetriever
        from tandem.training.verify import verify_memorisation

        retriever = GenerativeRetriever.from_artifact(artifact, num_beams=max(self.cfg.num_beams, self.cfg.eval_k),
                                                      normalize="level")
        out: dict[str, float] = {}
        for name, items, codes in (("new", new, new_codes), ("old", old, old_codes)):
            if not items:
                continue
            hits = retriever.retrieve([self._eval_query(it) for it in items], self.cfg.eval_k)
            found = [it.item_id in {h.item_id for h in hs} for it, hs in zip(items, hits, strict=True)]
            out[f"{name}_r{self.cfg.eval_k}"] = float(np.mean(found))
            docs, _ = self._examples(items, codes, 0, 0)
            report = verify_memorisation(artifact.model, self.tok, docs, self.device, autocast=self.bf16)
            out[f"{name}_exact_match"] = report.exact_match
        return out

    # -- the run ----------------------------------------------------------------------------

    def run(self, new_items: Sequence[Item], old_items: Sequence[Item], out: Path, base_ref: str) -> dict[str, Any]:
        import torch

        from tandem.generative.adapter_artifact import finish_adapter_artifact
        from tandem.generative.artifacts import GenerativeArtifact
        from tandem.training.peft_methods import apply_peft, merge, save_adapter, trainable_parameters

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        base, id_map = self.artifact, self.artifact.id_map
        new, old = split_items(set(id_map.item_ids()), new_items, old_items)
        if len(old) > cfg.eval_old_items:
            old_eval = [old[i] for i in np.sort(rng.choice(len(old), cfg.eval_old_items, replace=False))]
        else:
            old_eval = list(old)
        old_eval_codes = [id_map.codes(it.item_id) for it in old_eval]

        t0 = time.perf_counter()
        known_new = [it for it in new if it.item_id in id_map]
        before = self._checks(base, known_new, old_eval, [id_map.codes(it.item_id) for it in known_new],
                              old_eval_codes)
        # Items the base cannot name are never retrieved or memorised: 0 by definition.
        share = len(known_new) / len(new)
        before[f"new_r{cfg.eval_k}"] = before.get(f"new_r{cfg.eval_k}", 0.0) * share
        before["new_exact_match"] = before.get("new_exact_match", 0.0) * share
        check_s = time.perf_counter() - t0

        free_before = id_map.free_slots()
        assigned = id_map.assign(new)
        new_codes = [assigned[it.item_id] for it in new]
        self.echo(f"IDs: {len(new)} new/changed items ({len(new) - len(known_new)} new) placed in the reserved "
                  f"space; free slots {free_before} -> {id_map.free_slots()}, ID map v{id_map.version}")

        new_docs, new_queries = self._examples(new, new_codes, cfg.queries_per_item, 0)
        old_codes = [id_map.codes(it.item_id) for it in old]
        old_docs, old_queries = self._examples(old, old_codes, max(cfg.queries_per_item // 2, 1) if old else 0,
                                               len(new))
        replay_pool = old_docs + old_queries

        fisher = None
        t_fisher = time.perf_counter()
        if cfg.ewc_lambda > 0:
            from tandem.training.ewc import fisher_diagonal

            if not replay_pool:
                raise InvalidInput("`ewc_lambda` > 0 needs `old_items` to estimate the Fisher information on")
            pick = rng.choice(len(replay_pool), min(cfg.fisher_samples, len(replay_pool)), replace=False)
            fisher = fisher_diagonal(base.model, [replay_pool[i] for i in pick], self.tok.pad_id, self.device,
                                     cfg.peft.target_modules)
        fisher_s = time.perf_counter() - t_fisher

        model = apply_peft(base.model, cfg.peft)
        model.tandem_spec = cfg.peft
        params = trainable_parameters(model)
        self.echo(f"{cfg.peft.method}: {params['trainable']:,} trainable of {params['total']:,} parameters "
                  f"({100 * params['trainable_share']:.2f} %)")
        ewc = None
        if fisher is not None:
            from tandem.training.ewc import LoraEWC

            ewc = LoraEWC(model, fisher, cfg.ewc_lambda)
        epochs, train_s, samples = self._train(model, new_docs + new_queries, replay_pool, ewc, rng, len(new))

        # Save the adapter tensors now: merging for the checks folds them into the base.
        save_adapter(model, cfg.peft, out)
        after_art = GenerativeArtifact(model=merge(model), tokenizer=self.tok, id_map=id_map, manifest=base.manifest)
        t1 = time.perf_counter()
        after = self._checks(after_art, new, old_eval, new_codes, old_eval_codes)
        check_s += time.perf_counter() - t1
        metrics = AdapterMetrics.from_checks(cfg.eval_k, before, after).as_dict()
        summary = {
            "config": cfg.model_dump(mode="json"), "device": str(self.device), "bf16_autocast": self.bf16,
            "new_items": len(new), "changed_items": len(known_new), "old_items": len(old),
            "old_items_checked": len(old_eval), "query_source": self.query_source,
            "examples_new": len(new_docs) + len(new_queries), "replay_pool": len(replay_pool),
            "parameters": params, "epochs": epochs, "samples": samples,
            "train_seconds": round(train_s, 2), "fisher_seconds": round(fisher_s, 2),
            "check_seconds": round(check_s, 2), "samples_per_s": round(samples / max(train_s, 1e-9), 1),
            "id_map_version": id_map.version, "free_slots": id_map.free_slots(),
        }
        finish_adapter_artifact(out, cfg.peft, id_map, base_manifest=base.manifest,
                                new_items=[it.item_id for it in new], metrics=metrics, training=summary,
                                base_ref=base_ref)
        return {"metrics": metrics, **summary, "out": str(out)}

    def _distill(self, model: Any, inputs: dict[str, Any], logits: Any, old_rows: list[bool]) -> Any:
        """KL(base ‖ adapted) on the replayed old-item rows of a batch, per target token.

        Replay with hard labels only keeps the gold ID on top; distilling the base's whole
        output distribution keeps the *ranking* of the other IDs too, which is what R@10
        on unseen phrasings of old queries depends on (exercise 5.4: distillation from the
        old model). The teacher is the same network with the adapter switched off.
        """
        import torch
        import torch.nn.functional as F

        rows = torch.tensor(old_rows, device=logits.device)
        if not bool(rows.any()):
            return None
        with torch.no_grad(), model.disable_adapter(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                                        enabled=self.bf16):
            teacher = model(input_ids=inputs["input_ids"][rows], attention_mask=inputs["attention_mask"][rows],
                            decoder_input_ids=inputs["decoder_input_ids"][rows]).logits
        mask = inputs["labels"][rows] != -100
        student = F.log_softmax(logits[rows].float(), -1)
        target = F.log_softmax(teacher.float(), -1)
        kl = (target.exp() * (target - student)).sum(-1)
        return (kl * mask).sum() / mask.sum().clamp(min=1)

    def _train(self, model: Any, new_examples: list[Example], replay_pool: list[Example], ewc: Any,
               rng: np.random.Generator, n_new: int) -> tuple[list[dict[str, Any]], float, int]:
        """Epochs over the new examples with ``replay`` share of old ones; returns records, seconds, samples."""
        import torch
        from tqdm.auto import tqdm

        from tandem.training.data import batches, collate

        cfg = self.cfg
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        n_replay, share = 0, cfg.replay_share("t5")
        if replay_pool and share > 0:
            n_replay = int(round(len(new_examples) * share / (1 - share)))
        order = rng.permutation(len(replay_pool)) if replay_pool else np.zeros(0, np.int64)
        cursor = 0
        records: list[dict[str, Any]] = []
        samples, seconds = 0, 0.0
        steps_per_epoch = -(-(len(new_examples) + n_replay) // cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        model.train()
        step = 0
        bar = tqdm(total=total_steps, disable=not self.progress, desc="adapter", unit="batch", leave=False)
        for epoch in range(cfg.epochs):
            # Walk through the old pool without replacement across epochs, so replay covers
            # as many different old items as the budget allows.
            take: list[int] = []
            while len(take) < n_replay and len(order):
                chunk = order[cursor: cursor + n_replay - len(take)]
                take.extend(chunk.tolist())
                cursor += len(chunk)
                if cursor >= len(order):
                    order, cursor = rng.permutation(len(replay_pool)), 0
            examples = new_examples + [replay_pool[i] for i in take]
            losses, penalties, distills = [], [], []
            t0 = time.perf_counter()
            for batch in batches(examples, cfg.batch_size, rng):
                # Linear warm-up over the first 10 % of steps, then linear decay to 10 %.
                warm = max(1, total_steps // 10)
                scale = (step + 1) / warm if step < warm else max(0.1, 1 - (step - warm) / max(total_steps - warm, 1))
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * scale
                inputs = collate(batch, self.tok.pad_id, self.device)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                   decoder_input_ids=inputs["decoder_input_ids"]).logits
                loss, _ = multitask_loss(logits, inputs["labels"], inputs["tasks"], ADAPTER_WEIGHTS)
                if cfg.distill > 0:
                    kd = self._distill(model, inputs, logits, [e.item >= n_new for e in batch])
                    if kd is not None:
                        distills.append(float(kd.detach()))
                        loss = loss + cfg.distill * kd
                if ewc is not None:
                    pen = ewc.penalty()
                    penalties.append(float(pen.detach()))
                    loss = loss + pen
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                losses.append(float(loss.detach()))
                step += 1
                bar.update(1)
            dt = time.perf_counter() - t0
            seconds += dt
            samples += len(examples)
            rec = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4), "examples": len(examples),
                   "replay": len(take), "seconds": round(dt, 2)}
            if penalties:
                rec["ewc_penalty"] = round(float(np.mean(penalties)), 5)
            if distills:
                rec["distill_kl"] = round(float(np.mean(distills)), 5)
            records.append(rec)
            log.info("adapter epoch %d: loss %.4f (%d examples, %d replayed)", epoch + 1, rec["loss"],
                     len(examples), len(take))
        bar.close()
        model.eval()
        return records, seconds, samples
