"""Failed-query cycle → one hourly adapter (issue 22 item 2), the phase of ``bench.feedback
--adapter``.

The cycle's corrective samples (``samples.jsonl``: a misspelt dev query → the top items its
correction retrieves, a vocabulary-gap query → the items its users clicked later;
:func:`tandem.failed.cycle.corrective_pairs`, 3 targets each) are the ``extra_pairs`` of one
tree adapter on the v2 model (:func:`tandem.training.tree_adapter_train.train_tree_adapter`,
no new items this hour, replay 0.5 of the judged items and the quick index's sample). Then
R@10 (grade ≥ 4) of the typo'd and of the clean dev queries is measured through the
generative retriever alone and through the hybrid (BM25 + generative, RRF), with the base and
with base + adapter; ``cycle_*``: the whole system after one cycle, the hybrid with the adapter
on the queries rewritten by the cycle's corrections, against the base hybrid on the raw ones.
The typo'd queries are the very queries that failed: the cycle is meant to answer what users
typed. Decoding: item beam 20, cluster beam 200 (CPU).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def _r10(search: Callable[[list[str]], list[list[str]]], queries: Mapping[str, str],
         qrels: Mapping[str, Mapping[str, int]]) -> float:
    qids = sorted(queries)
    ranked = search([queries[q] for q in qids])
    out = []
    for q, ids in zip(qids, ranked, strict=True):
        rel = {i for i, g in qrels[q].items() if g >= 4}
        out.append(len(rel & set(ids[:10])) / len(rel) if rel else 0.0)
    return statistics.mean(out)


def adapter_phase(model: Path, cycle: Path, items: Sequence[Any], bm25: Any, typo: Mapping[str, str],
                  clean: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], out: Path,
                  epochs: int = 5, rewrite: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Train one adapter on the cycle's corrective pairs and measure it (module docstring)."""
    from tandem.failed.cycle import corrective_pairs
    from tandem.fusion.rrf import RRF
    from tandem.generative.tree_retriever import TreeRetriever
    from tandem.search import HybridSearcher, SearchConfig, SearchRequest
    from tandem.training.adapter import adapter_config
    from tandem.training.tree_adapter_train import train_tree_adapter

    pairs = corrective_pairs(cycle, per_query=3)
    cfg = adapter_config({"tree_epochs": epochs, "replay": 0.5, "eval_old_items": 100, "device": "cpu"})
    started = time.perf_counter()
    summary = train_tree_adapter(model, [], list(items), out, cfg, extra_pairs=pairs, echo=lambda _: None)
    train_s = time.perf_counter() - started
    figures: dict[str, Any] = {"adapter_pairs": summary["examples_corrective"], "adapter_replay": summary["replay_pool"],
                               "adapter_train_seconds": round(train_s, 1), "adapter_corrective": summary["corrective"],
                               "adapter_old_r10_drop": summary["metrics"].get("old_r10_drop")}
    for name, adapter in (("base", None), ("adapter", out)):
        gen = TreeRetriever(model, adapter=adapter, device="cpu", num_beams=20, upper_beam=200)
        gen.name = "generative"
        hybrid = HybridSearcher([bm25, gen], fuser=RRF(), config=SearchConfig(deadline_s=120.0))

        def gen_search(texts: list[str], gen: TreeRetriever = gen) -> list[list[str]]:
            return [[h.item_id for h in hits] for hits in gen.retrieve(texts, 10)]

        def hyb_search(texts: list[str], hybrid: HybridSearcher = hybrid) -> list[list[str]]:
            return [[h.item_id for h in hybrid.search(SearchRequest(query=t, top_k=10)).hits] for t in texts]

        for system, fn in (("generative", gen_search), ("hybrid", hyb_search)):
            figures[f"{system}_typo_r10_{name}"] = round(_r10(fn, typo, qrels), 4)
            figures[f"{system}_clean_r10_{name}"] = round(_r10(fn, clean, qrels), 4)
        if adapter is not None and rewrite is not None:
            fixed = lambda qs: {q: rewrite(t) for q, t in qs.items()}  # noqa: E731
            figures["cycle_typo_r10"] = round(_r10(hyb_search, fixed(typo), qrels), 4)
            figures["cycle_clean_r10"] = round(_r10(hyb_search, fixed(clean), qrels), 4)
        hybrid.close()
        gen.close()
    if "cycle_typo_r10" in figures:
        before = figures["hybrid_typo_r10_base"]
        figures["cycle_typo_r10_relative_gain"] = round((figures["cycle_typo_r10"] - before) / before, 4)
        figures["cycle_clean_r10_drop"] = round(figures["hybrid_clean_r10_base"] - figures["cycle_clean_r10"], 4)
    for system in ("generative", "hybrid"):
        before, after = figures[f"{system}_typo_r10_base"], figures[f"{system}_typo_r10_adapter"]
        figures[f"{system}_typo_r10_relative_gain"] = round((after - before) / before, 4) if before else None
        figures[f"{system}_clean_r10_drop"] = round(figures[f"{system}_clean_r10_base"]
                                                    - figures[f"{system}_clean_r10_adapter"], 4)
    return figures
