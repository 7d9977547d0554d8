"""Pseudo-relevance feedback of the v2 generative retriever: chosen on one half of dev, judged on the other.

The retriever decodes an item beam of ``--pool`` per query once; each setting of
``prf_docs`` × ``prf_weight`` then re-ranks those beams
(:func:`tandem.generative.tree_decoding.prf_rescore`, the same code the retriever runs).
The dev queries are split in two by a seeded hash of their ids: the setting with the best
nDCG@10 on half A is reported on half B (queries it was not chosen on) and on the whole
dev set, next to feedback off. Figures are nDCG@10, R@10 and R@100 (grade ≥ 4, as
BENCHMARK.md).

    python -m bench.prf --model MODEL_DIR --out bench-prf.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

MEASURES = ("nDCG@10", "R(rel=4)@10", "R(rel=4)@100")


def half(qid: str, seed: int) -> str:
    """``"A"`` or ``"B"``: a seeded, order-free split of query ids."""
    return "AB"[hashlib.sha256(f"{seed}:{qid}".encode()).digest()[0] & 1]


def main() -> None:
    """Decode once, sweep the feedback settings, print the figures and write them to ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="v2 model folder (tandem train generative)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    ap.add_argument("--pool", type=int, default=300, help="item beam re-ranked by feedback")
    ap.add_argument("--docs", default="2,3,5,10", help="feedback items tried (comma-separated)")
    ap.add_argument("--weights", default="0.1,0.25,0.5", help="feedback weights tried (comma-separated)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from tandem.catalog.datasets import data_root, load_homedepot
    from tandem.eval import evaluate
    from tandem.generative.tree_decoding import prf_rescore, tree_beam_search
    from tandem.generative.tree_retriever import TreeRetriever

    data = load_homedepot(data_root("homedepot"), splits=("dev",))
    qrels = data.qrels["dev"]
    queries = {q: t for q, t in data.queries["dev"].items() if q in qrels}
    r = TreeRetriever(args.model, num_beams=args.pool)
    art, ids = r.artifact, r.artifact.id_map.item_ids()
    qids = list(queries)
    beams = [max(r.upper_beam, args.pool)] * (art.index.length - 1) + [args.pool]
    t0 = time.perf_counter()
    decoded = []
    for s in range(0, len(qids), 32):
        q, states, mask, _ = r._encode([queries[i] for i in qids[s : s + 32]])
        decoded.append(tree_beam_search(art.model, art.index, q, states, mask, beams=beams))
    nodes, scores = torch.cat([n for n, _ in decoded]), torch.cat([s for _, s in decoded])
    decode_s = time.perf_counter() - t0

    def figures(docs: int, weight: float) -> dict[str, dict[str, float]]:
        n, sc = prf_rescore(art.model, nodes, scores, docs=docs, weight=weight)
        run = {qid: [(ids[i], float(v)) for i, v in zip(row[:100], val[:100], strict=True) if i >= 0]
               for qid, row, val in zip(qids, n.tolist(), sc.float().tolist(), strict=True)}
        out = {}
        for part in ("A", "B", "all"):
            keep = [q for q in qids if part == "all" or half(q, args.seed) == part]
            got = evaluate({q: run[q] for q in keep}, {q: qrels[q] for q in keep}, list(MEASURES)).metrics
            out[part] = {m: round(got[m], 4) for m in MEASURES}
        return out

    grid: dict[str, Any] = {"off": figures(0, 0.0)}
    print("off", grid["off"], flush=True)
    for docs in (int(x) for x in args.docs.split(",")):
        for weight in (float(x) for x in args.weights.split(",")):
            grid[f"docs={docs} weight={weight:g}"] = figures(docs, weight)
            print(f"docs={docs} weight={weight:g}", grid[f"docs={docs} weight={weight:g}"], flush=True)
    best = max((k for k in grid if k != "off"), key=lambda k: grid[k]["A"]["nDCG@10"])
    result = {"model": str(args.model), "pool": args.pool, "queries": len(qids),
              "half_B": sum(half(q, args.seed) == "B" for q in qids), "decode_seconds": round(decode_s, 1),
              "chosen_on_A": best, "B_off": grid["off"]["B"], "B_chosen": grid[best]["B"],
              "all_off": grid["off"]["all"], "all_chosen": grid[best]["all"], "grid": grid}
    print(json.dumps({k: v for k, v in result.items() if k != "grid"}, indent=2))
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
