"""Sharded generative serving on a trained v2 model: same top 10 as one model, and the latency.

Loads ``--model`` once as one model and as 2 and 4 shards by top-level ID code
(:func:`tandem.generative.tree_shards.open_sharded_tree_retriever`: all shards in this
process, one encoder pass per batch, shards decoded in parallel threads and merged by score —
every shard on the same cores, the hardest case for latency). On the dev queries it reports
the top-``k`` overlap of each sharded setup with one model, and p50/p99 latency per batch of
``--batch`` queries (beam 100, upper beam 1000), with the process CPU time per batch next to
it (what the shards cost, whatever else shares the machine). Configurations are timed round-robin, batch by
batch, so a change in machine load hits them alike. Shards serve without pseudo-relevance feedback (each
would feed back from its own items only), so the one-model baseline runs without it too; the
overlap with the served one-model default (feedback on) is reported beside it
(``top10_overlap_vs_feedback``): what sharding costs a deployment that has feedback today.

The chart deploys one service per shard, each on its own cores, encoding the query itself.
``pod_p50_vs_one`` models that: per batch, each shard of ``tandem serve generative --shard
i/N`` (:func:`~tandem.generative.tree_shards.open_shard_retriever`) retrieves alone, and the
batch takes as long as the slowest (network and the merge left out).

    python -m bench.shards --model MODEL_DIR --out bench-shards.json [--queries 320] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    """Measure, print and write the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="v2 model folder (tandem train generative)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    ap.add_argument("--queries", type=int, default=0, help="dev queries (default: all)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--k", type=int, default=10, help="top-k compared")
    ap.add_argument("--shards", default="2,4", help="shard counts compared with one model")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (per shard thread)")
    args = ap.parse_args()

    import torch

    from tandem.catalog.datasets import data_root, load_homedepot
    from tandem.generative.tree_shards import open_shard_retriever, open_sharded_tree_retriever

    torch.set_num_threads(args.threads)
    dev = list(load_homedepot(data_root("homedepot"), splits=("dev",)).queries["dev"].values())
    queries = dev[: args.queries] if args.queries else dev
    counts = [1] + [int(c) for c in args.shards.split(",") if c]
    setups = {n: open_sharded_tree_retriever(args.model, n, device="cpu", prf_weight=0.0) for n in counts}
    feedback = open_sharded_tree_retriever(args.model, 1, device="cpu")  # the served default, for overlap only
    pods = {n: [open_shard_retriever(args.model, i, n, device="cpu", prf_weight=0.0) for i in range(n)]
            for n in counts if n > 1}
    for r in [*setups.values(), *(shard for group in pods.values() for shard in group)]:
        r.retrieve(queries[: args.batch], 100)  # warm-up
    tops: dict[int, list[list[str]]] = {n: [] for n in counts}
    ms: dict[int, list[float]] = {n: [] for n in counts}
    cpu: dict[int, list[float]] = {n: [] for n in counts}  # process CPU: robust to other jobs' load
    pod_ms: dict[int, list[float]] = {n: [] for n in pods}  # the slowest shard, each retrieving alone
    for s in range(0, len(queries), args.batch):
        chunk = queries[s : s + args.batch]
        for n in counts[s // args.batch % len(counts):] + counts[: s // args.batch % len(counts)]:
            t0, c0 = time.perf_counter(), time.process_time()
            hits = setups[n].retrieve(chunk, 100)
            ms[n].append((time.perf_counter() - t0) * 1000)
            cpu[n].append((time.process_time() - c0) * 1000)
            tops[n].extend([h.item_id for h in row[: args.k]] for row in hits)
            if n in pods:
                alone = []
                for shard in pods[n]:
                    t0 = time.perf_counter()
                    shard.retrieve(chunk, 100)
                    alone.append((time.perf_counter() - t0) * 1000)
                pod_ms[n].append(max(alone))
    one = tops[1]
    with_feedback = [[h.item_id for h in row[: args.k]] for s in range(0, len(queries), args.batch)
                     for row in feedback.retrieve(queries[s : s + args.batch], 100)]
    result: dict[str, object] = {"model": str(args.model), "queries": len(queries), "batch": args.batch,
                                 "threads": args.threads, "k": args.k}
    for n in counts:
        p50 = statistics.median(ms[n])
        result[f"shards_{n}"] = {
            "batch_p50_ms": p50, "batch_p99_ms": statistics.quantiles(ms[n], n=100, method="inclusive")[98],
            "per_query_p50_ms": p50 / args.batch,
            f"top{args.k}_overlap": sum(len(set(a) & set(b)) for a, b in zip(one, tops[n])) / sum(map(len, one)),
            f"top{args.k}_overlap_vs_feedback": sum(len(set(a) & set(b)) for a, b in zip(with_feedback, tops[n]))
            / sum(map(len, with_feedback)),
            "p50_vs_one": p50 / statistics.median(ms[1]),
            "cpu_p50_ms": statistics.median(cpu[n]),
            "cpu_vs_one": statistics.median(cpu[n]) / statistics.median(cpu[1]),
        }
        if n in pod_ms:
            result[f"shards_{n}"]["pod_p50_ms"] = statistics.median(pod_ms[n])  # type: ignore[index]
            result[f"shards_{n}"]["pod_p50_vs_one"] = statistics.median(pod_ms[n]) / statistics.median(ms[1])  # type: ignore[index]
        print(n, json.dumps(result[f"shards_{n}"]), flush=True)
    result["shard_top10_overlap"] = min(result[f"shards_{n}"][f"top{args.k}_overlap"]  # type: ignore[index]
                                        for n in counts)
    result["worst_p50_vs_one"] = max(result[f"shards_{n}"]["p50_vs_one"] for n in counts)  # type: ignore[index]
    result["worst_pod_p50_vs_one"] = max((result[f"shards_{n}"]["pod_p50_vs_one"] for n in pods),  # type: ignore[index]
                                         default=1.0)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
