"""What the v1 T5 trainer's stages train on: examples built once per run, drawn anew per epoch.

Stage 1 draws span-corruption examples of the item texts, stage 2 doc→id over a
progressive, balanced subset, stages 3–4 query→id (real pairs, template pseudo-queries,
exact titles for the curriculum, generated queries in the id→query round) with id→query
and doc→id replay. The strategies of sections 5.3–5.4 (curriculum, augmentation, adaptive
sampling, BM25-hard negatives) shape the query→id examples here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tandem.catalog.item import Item
from tandem.training.config import TrainConfig
from tandem.training.data import QueryGroups, QuerySpec, balanced_exposures, difficulty, encode_q2id, progressive_subset
from tandem.training.denoise import span_corrupt
from tandem.training.objectives import Example, doc2id, id2q

#: Curriculum level of each pair source (see :mod:`tandem.training.curriculum`).
EXACT, TEMPLATE, REAL, REWRITTEN = 0, 1, 2, 3


@dataclass
class T5Data:
    """Examples and example sources of one T5 run (see the module docstring)."""

    config: TrainConfig
    items: list[Item]
    codes: np.ndarray
    tokenizer: Any
    text_ids: list[list[int]]
    doc_examples: list[Example]
    id2q_examples: list[Example]
    groups: QueryGroups
    q2id_specs: list[QuerySpec]
    target_ids: Any
    difficulty: np.ndarray
    hard: dict[int, list[int]] = field(default_factory=dict)
    substitutes: dict[str, list[str]] = field(default_factory=dict)
    augmented: int = 0
    """Augmented examples drawn in the current epoch (reset per query→id epoch)."""

    @classmethod
    def build(cls, config: TrainConfig, items: list[Item], codes: np.ndarray, item_index: Mapping[str, int],
              pairs: Sequence[tuple[str, str]], tokenizer: Any, *, pseudo: Mapping[str, Sequence[str]] | None,
              bm25_run: Mapping[str, Sequence[str]] | None) -> T5Data:
        """Encode texts and queries with ``tokenizer`` and gather every pair source the config turns on."""
        import torch

        cfg, tok = config, tokenizer
        # One prefix token precedes the text, so texts get max_input_length - 1 tokens.
        text_ids = tok.encode_texts([it.text() for it in items], cfg.max_input_length - 1)
        queries = sorted({q for q, _ in pairs})
        tgt = dict(zip(queries, tok.encode_texts(queries, cfg.max_query_length), strict=True))
        data = cls(
            config=cfg, items=items, codes=codes, tokenizer=tok, text_ids=text_ids,
            doc_examples=[doc2id(tok, t, c, i) for i, (t, c) in enumerate(zip(text_ids, codes.tolist()))],
            # id→query learns from real queries only: the id→query round should sample queries
            # that look like shoppers', not like the templates.
            id2q_examples=[id2q(tok, tgt[q], codes[item_index[i]].tolist(), item_index[i]) for q, i in pairs],
            groups=QueryGroups(), q2id_specs=[],
            target_ids=torch.tensor([[*tok.encode_id(c), tok.eos_id] for c in codes.tolist()], dtype=torch.long),
            difficulty=difficulty(np.array([len(t) for t in text_ids]), codes))
        data.q2id_specs = [data.spec(q, item_index[i], REAL) for q, i in pairs]
        if cfg.pseudo_queries:
            from tandem.training.pseudo import template_queries

            for idx, item in enumerate(items):
                given = pseudo.get(item.item_id) if pseudo is not None else None
                texts = given[: cfg.pseudo_queries] if given is not None else \
                    template_queries(item, cfg.pseudo_queries, cfg.seed)
                data.q2id_specs += [data.spec(q, idx, TEMPLATE) for q in texts]
        if cfg.curriculum:
            data.q2id_specs += [data.spec(it.title.lower(), idx, EXACT) for idx, it in enumerate(items)]
        if cfg.hard_negatives:
            data.hard = data._hard_negatives(item_index, bm25_run)
        if cfg.augment_share:
            from tandem.eval.robustness import cooccurrence_synonyms

            data.substitutes = cooccurrence_synonyms([it.text() for it in items])
        return data

    def spec(self, text: str, item: int, level: int) -> QuerySpec:
        """A query→id pair of curriculum ``level``, grouped with the other items of its text."""
        return QuerySpec(text, item, self.groups.add(text, item), level)

    def _hard_negatives(self, item_index: Mapping[str, int],
                        run: Mapping[str, Sequence[str]] | None) -> dict[int, list[int]]:
        """Group → BM25-hard negatives, from the given run or one computed here."""
        from tandem.training.negatives import bm25_run, hard_negatives

        texts = list(self.groups.index)
        if run is None:
            depth = self.config.hard_negatives + max(len(p) for p in self.groups.positives) + 10
            with tempfile.TemporaryDirectory() as tmp:  # only the run is kept, not the index
                run = bm25_run(self.items, texts, depth, Path(tmp) / "bm25")
        ids = [it.item_id for it in self.items]
        positives = {t: {ids[i] for i in self.groups.positives[g]} for t, g in self.groups.index.items()}
        by_text = hard_negatives(run, positives, item_index, self.config.hard_negatives)
        return {self.groups.index[t]: negs for t, negs in by_text.items() if negs}

    # -- one epoch's examples, per stage ----------------------------------------------------

    def denoising(self, epoch: int, rng: np.random.Generator) -> list[Example]:
        """Stage 1: span corruption of every item text."""
        cfg, tok = self.config, self.tokenizer
        out = []
        for i, ids in enumerate(self.text_ids):
            ex = span_corrupt(ids[:-1], tok.sentinel_ids, tok.eos_id, rng, cfg.noise_density, cfg.mean_span, item=i)
            if ex is not None:
                out.append(ex)
        return out

    def memorising(self, epoch: int, rng: np.random.Generator) -> list[Example]:
        """Stage 2: doc→id over the epoch's progressive subset, balanced exposures."""
        cfg = self.config
        subset = progressive_subset(self.difficulty, epoch, cfg.progressive_epochs, cfg.progressive_start)
        return [self.doc_examples[i] for i in balanced_exposures(subset, cfg.exposures, rng)]

    def aligning(self, epoch: int, rng: np.random.Generator, *, curriculum: bool, generated: Sequence[Sequence[Any]],
                 accuracy: Callable[[list[Example]], np.ndarray] | None) -> list[Example]:
        """Stages 3–4: query→id (with ``generated`` [query, item] pairs; ordered by the
        ``curriculum`` when it is on), then id→query and doc→id replay.
        ``accuracy``: per-example accuracy of the current model, for adaptive sampling."""
        cfg = self.config
        self.augmented = 0
        replay: list[Example] = []
        if cfg.replay_exposures:
            order = balanced_exposures(np.arange(len(self.items)), cfg.replay_exposures, rng)
            replay = self._replay(order, rng)
        return self._q2id(epoch, rng, curriculum, generated, accuracy) + self.id2q_examples + replay

    def _q2id(self, epoch: int, rng: np.random.Generator, curriculum: bool, generated: Sequence[Sequence[Any]],
              accuracy: Callable[[list[Example]], np.ndarray] | None) -> list[Example]:
        """This epoch's query→id examples: curriculum levels, augmentation, adaptive sampling."""
        from tandem.training import curriculum as cur

        cfg = self.config
        specs = list(self.q2id_specs) + [self.spec(q, int(i), TEMPLATE) for q, i in generated]
        top = REWRITTEN
        if cfg.curriculum and curriculum:
            specs = [specs[i] for i in cur.curriculum_order([s.level for s in specs], epoch, cfg.align_epochs)]
            top = cur.max_level(epoch, cfg.align_epochs)
        if cfg.augment_share and top >= REWRITTEN:
            from tandem.training.augment import mix_augmented, rewrite_query

            specs, n = mix_augmented(specs, lambda s, r: s.rewritten(rewrite_query(s.text, r)), cfg.augment_share,
                                     rng)
            self.augmented += n
        examples = encode_q2id(self.tokenizer, specs, self.codes, cfg.max_input_length, self.hard)
        if cfg.adaptive_alpha and examples and accuracy is not None:
            acc = accuracy(examples)
            examples = [examples[i] for i in cur.adaptive_sample(acc, cfg.adaptive_alpha, len(examples), rng)]
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
        self.augmented += n
        return out

    def strategy_summary(self, round_stats: dict[str, float], align_peft: Any) -> dict[str, Any]:
        """Pair counts per source and what the id→query round kept (for the ablation)."""
        levels = [s.level for s in self.q2id_specs]
        return {
            "q2id_pairs": {"exact": levels.count(EXACT), "template": levels.count(TEMPLATE), "real": levels.count(REAL)},
            "hard_negative_queries": len(self.hard),
            "id2q_round": round_stats,
            "align_peft": align_peft,
        }
