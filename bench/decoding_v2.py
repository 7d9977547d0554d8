"""Latency of the v2 generative retriever: trie-constrained tree decoding on a trained folder.

Queries (Home Depot dev by default) are answered in batches of ``--batch`` at item beam
``--beam`` (k = beam) with ``--upper`` beams at the cluster levels. Per batch it times the
encoder and the constrained decoding separately, and as the constraint-overhead reference
the same decoder *without* the tree constraint: the item-level state scores every item
of the catalog (what the decoder costs if nothing is pruned). Figures are per query.

    python -m bench.decoding_v2 --model MODEL_DIR --out bench-decoding-v2.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    """Time the retriever, print the figures and write them to ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="v2 model folder (tandem train generative)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    ap.add_argument("--queries", type=int, default=640, help="dev queries timed (default 640 = 20 batches)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--beam", type=int, default=100, help="item-level beam = k")
    ap.add_argument("--upper", type=int, default=1000, help="beam at the cluster levels")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="auto", help="auto (bf16 where native), bf16 or fp32")
    ap.add_argument("--no-prf", action="store_true", help="decode without pseudo-relevance feedback (the default "
                    "re-ranks an item beam of 300 around the top hits)")
    args = ap.parse_args()

    import torch

    from tandem.catalog.datasets import data_root, load_homedepot
    from tandem.generative.tree_decoding import prf_rescore, tree_beam_search
    from tandem.generative.tree_retriever import TreeRetriever

    torch.set_num_threads(args.threads)
    r = TreeRetriever(args.model, device="cpu", num_beams=args.beam, upper_beam=args.upper, batch_size=args.batch,
                      precision=args.precision, **({"prf_docs": 0} if args.no_prf else {}))
    art = r.artifact
    pool = max(args.beam, r.prf[2]) if r.prf else args.beam
    queries = list(load_homedepot(data_root("homedepot"), splits=("dev",)).queries["dev"].values())[: args.queries]
    beams = [max(args.upper, pool)] * (art.index.length - 1) + [pool]
    r.retrieve(queries[: args.batch], args.beam)  # warm-up
    enc_ms, dec_ms, flat_ms, total_ms, prf_ms = [], [], [], [], []
    for s in range(0, len(queries) - args.batch + 1, args.batch):
        chunk = queries[s : s + args.batch]
        t0 = time.perf_counter()
        q, states, mask, _ = r._encode(chunk)  # noqa: SLF001 - the bench times the parts
        t1 = time.perf_counter()
        nodes, scores = tree_beam_search(art.model, art.index, q, states, mask, beams=beams)
        tf = time.perf_counter()
        if r.prf:
            prf_rescore(art.model, nodes, scores, docs=r.prf[0], weight=r.prf[1])
        t2 = time.perf_counter()
        with torch.inference_mode():  # no constraint: the item-level state scores every item
            kv, bias = art.model.memory(states, mask)
            h = art.model.step(art.index.length - 1, torch.zeros(len(chunk), 1, dtype=torch.long), q, kv, bias)
            art.model.logits(art.index.length - 1, h[:, 0]).topk(args.beam, dim=-1)
        t3 = time.perf_counter()
        n = len(chunk)
        enc_ms.append(1000 * (t1 - t0) / n)
        dec_ms.append(1000 * (t2 - t1) / n)
        prf_ms.append(1000 * (t2 - tf) / n)
        flat_ms.append(1000 * (t3 - t2) / n)
        total_ms.append(1000 * (t2 - t0) / n)
    figures = {
        "items": len(art.id_map), "queries": len(total_ms) * args.batch, "batch": args.batch, "beam": args.beam,
        "upper_beam": args.upper, "threads": args.threads, "dtype": str(r.dtype),
        "feedback": {"docs": r.prf[0], "weight": r.prf[1], "pool": r.prf[2]} if r.prf else None,
        "feedback_p50_ms": round(float(np.median(prf_ms)), 3),
        "p50_ms_per_query": round(float(np.median(total_ms)), 3),
        "p99_ms_per_query": round(float(np.percentile(total_ms, 99)), 3),
        "encoder_p50_ms": round(float(np.median(enc_ms)), 3),
        "constrained_decoding_p50_ms": round(float(np.median(dec_ms)), 3),
        "unconstrained_all_items_p50_ms": round(float(np.median(flat_ms)), 3),
        "constraint_overhead_ratio": round(float(np.median(dec_ms) / np.median(flat_ms)), 2),
    }
    args.out.write_text(json.dumps({"figures": figures}, indent=2))
    for k, v in figures.items():
        print(f"{k:36s} {v}")


if __name__ == "__main__":
    main()
