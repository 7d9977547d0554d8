"""Latency that item scores and learned fusion add to a search (issue 18: ≤ 5 ms p50 at 200 candidates).

For each dev query: the BM25 and generative lists at depth ``--depth`` (not timed: retrieval
is measured by ``bench.serve`` and ``bench.decoding_v2``), then, timed per query, (1) the
generative model's item scores of every candidate (:meth:`TreeRetriever.score_items`: the
forced decoding of all candidates' IDs from the per-level decoder states and normalisers
that retrieval kept, plus the encoder cosine) and (2) the learned fusion's features and
LambdaMART ranking of the union (``fusion`` = ``features`` + ``predict`` and ordering).
Candidates are capped at ``--candidates``. ``cold_item_scores`` times the same call for a
query this replica did not just retrieve (encoder pass, decoder memory, a pass over every
level's nodes for the normalisers): what a miss of the retriever's recent-query memory costs.
Timed fusion is steady state: the feature builder keeps up to 200,000 titles' stems between
searches, so a serving replica looks a title up once; a first pass over the queries fills it
and times fusion with every title new (``fusion_cold_titles_p50_ms``: a replica's first searches).
``*_cpu_*`` columns are the calling thread's CPU time: item scores and fusion run on that one
thread, so this is their cost with a core to themselves — on a shared, busy host wall time
also counts the waits for a core.

    python -m bench.fusion_scores --model MODEL_DIR --fusion-model FUSION.json --out bench-fusion-scores.json
    python -m bench.fusion_scores --model MODEL_DIR --fusion-model FUSION.json --out F --quick   # 60 queries
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    """Time scoring and fusion per query, print the figures and write them to ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="v2 model folder (tandem train generative)")
    ap.add_argument("--fusion-model", type=Path, required=True, help="learned fusion JSON (tandem fusion train)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    ap.add_argument("--queries", type=int, default=300, help="dev queries timed")
    ap.add_argument("--depth", type=int, default=100, help="hits per source")
    ap.add_argument("--candidates", type=int, default=200, help="most candidates scored and fused per query")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="60 queries (a smoke run of a few minutes)")
    args = ap.parse_args()
    if args.quick:
        args.queries = min(args.queries, 60)

    import torch

    from tandem.catalog.datasets import data_root, load_homedepot
    from tandem.eval.systems import SystemSpec, build_system
    from tandem.fusion.base import RankedList
    from tandem.catalog.loaders import load_items
    from tandem.fusion.learned import LearnedFusion, title_lookup
    from tandem.generative.tree_retriever import TreeRetriever

    torch.set_num_threads(args.threads)
    root = data_root("homedepot")
    data = load_homedepot(root, splits=("dev",))
    queries = list(data.queries["dev"].values())[: args.queries]
    gen = TreeRetriever(args.model, device="cpu")
    bm25 = build_system("bm25", SystemSpec(catalog=root / "products.jsonl"))
    titles = title_lookup({it.item_id: it.title for it in load_items(root / "products.jsonl").items})
    fusion = LearnedFusion.load(args.fusion_model, titles=titles if "q_in_title" in
                                json.loads(args.fusion_model.read_text())["features"] else None)
    ms: dict[str, list[float]] = {k: [] for k in ("item_scores", "features", "fusion", "cold_item_scores",
                                                  "item_scores_cpu", "fusion_cpu", "fusion_cold_titles")}
    sizes = []
    searches = []
    for q in queries:  # retrieval is not timed here; titles are looked up on first sight, as serving does
        lists = [RankedList("bm25", bm25.retrieve([q], args.depth)[0], q),
                 RankedList("generative", gen.retrieve([q], args.depth)[0], q)]
        ids = list(dict.fromkeys(h.item_id for rl in lists for h in rl.hits))[: args.candidates]
        scores = {i: dict(zip(gen.score_names, v)) for i, v in zip(ids, gen.score_items(q, ids)) if v is not None}
        t0 = time.perf_counter()
        fusion.fuse(lists, args.depth, scores)
        ms["fusion_cold_titles"].append(1000 * (time.perf_counter() - t0))
        searches.append((q, lists, ids))
    for n, (q, lists, ids) in enumerate(searches):
        gen.retrieve([q], args.depth)  # what score_items reuses is the query just retrieved
        c0, t0 = time.thread_time(), time.perf_counter()
        got = gen.score_items(q, ids)
        scores = {i: dict(zip(gen.score_names, v)) for i, v in zip(ids, got) if v is not None}
        c1, t1 = time.thread_time(), time.perf_counter()
        fusion.fuse(lists, args.depth, scores)
        c2, t2 = time.thread_time(), time.perf_counter()
        fusion.builder.build(lists, scores)
        t3 = time.perf_counter()
        gen.score_items(f"{q} ", ids)  # not retrieved: encoded and normalised here
        t4 = time.perf_counter()
        if n:  # the first query warms kernels
            for key, dt in (("item_scores", t1 - t0), ("fusion", t2 - t1), ("features", t3 - t2),
                            ("cold_item_scores", t4 - t3), ("item_scores_cpu", c1 - c0), ("fusion_cpu", c2 - c1)):
                ms[key].append(1000 * dt)
            sizes.append(len(ids))
    total = np.array(ms["item_scores"]) + np.array(ms["fusion"])
    figures: dict[str, object] = {"queries": len(total), "threads": args.threads,
                                  "median_candidates": float(np.median(sizes))}
    figures.update({f"{k}_p50_ms": round(float(np.median(v)), 2) for k, v in ms.items()})
    figures.update({
        "added_p50_ms": round(float(np.median(total)), 2),
        "added_p99_ms": round(float(np.percentile(total, 99)), 2),
        "added_cpu_p50_ms": round(float(np.median(np.array(ms["item_scores_cpu"]) + np.array(ms["fusion_cpu"]))), 2),
        "cold_added_p50_ms": round(float(np.median(np.array(ms["cold_item_scores"]) + np.array(ms["fusion"]))), 2),
        "fusion_features": len(fusion.builder.names), "score_names": list(fusion.score_names),
        "precision": str(gen.dtype).removeprefix("torch."),
    })
    args.out.write_text(json.dumps({"figures": figures}, indent=2))
    for k, v in figures.items():
        print(f"{k:24s} {v}")
    gen.close()
    bm25.close()


if __name__ == "__main__":
    main()
