"""BM25 benchmark: index build, per-query latency, batch QPS, upsert throughput — and the anchor.

``python -m bench.sparse [--quick] --out FILE.json`` on the Home Depot catalog
(``../shared/data/homedepot``): builds the index of all 54,667 products (``--quick``: the
first 5,000, 100 queries), measures single-thread latency of
:class:`tandem.sparse.SparseRetriever` and of Pyserini's own ``LuceneSearcher`` loop on
the same index (the anchor, ~3 ms/query), batch QPS with 2 threads for both, and upsert
throughput in batches and one item at a time (each call commits and is searchable on return).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path



def _data_dir() -> Path:
    from tandem.catalog.datasets import data_root
    from tandem.errors import InvalidInput

    try:
        return data_root("homedepot")
    except InvalidInput as exc:
        raise SystemExit(str(exc)) from None


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> None:
    """Run the benchmark, print a table, write ``{"figures": {...}}``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="5,000 items and 100 queries (under a minute)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--k", type=int, default=10, help="hits per query")
    args = ap.parse_args()

    from tandem.catalog import Item, read_queries
    from tandem.catalog.loaders import load_items
    from tandem.sparse import SparseConfig, SparseRetriever, build_index

    data = _data_dir()
    items = load_items(data / "products.jsonl").items
    queries = list(read_queries(data / "queries.dev.tsv").values())
    if args.quick:
        items, queries = items[:5_000], queries[:100]
    k = args.k
    figures: dict[str, float | int | str] = {"items": len(items), "queries": len(queries), "k": k}

    with tempfile.TemporaryDirectory(prefix="bench-sparse-") as tmp:
        index_dir = Path(tmp) / "index"
        stats = build_index(items, index_dir, SparseConfig(index_threads=2))
        figures["build_seconds"] = round(stats.build_seconds or 0.0, 2)
        figures["build_items_per_s"] = round(len(items) / (stats.build_seconds or 1), 1)

        # Both searchers run on the same JVM and index. The JIT needs a few hundred queries
        # to settle, and these machines are shared: warm both on the whole query set, then
        # alternate rounds and keep each side's median over the rounds.
        from pyserini.search.lucene import LuceneSearcher

        ls = LuceneSearcher(str(index_dir))
        ls.set_bm25(0.9, 0.4)
        r = SparseRetriever(index_dir, SparseConfig(search_threads=2), writable=False)
        systems = {"tandem": lambda q: r.retrieve([q], k), "pyserini": lambda q: ls.search(q, k)}
        for fn in systems.values():
            for q in queries:
                fn(q)
        rounds = 2 if args.quick else 3
        p50: dict[str, list[float]] = {n: [] for n in systems}
        p99: dict[str, list[float]] = {n: [] for n in systems}
        for _ in range(rounds):
            for name, fn in systems.items():
                lat = []
                for q in queries:
                    t = time.perf_counter()
                    fn(q)
                    lat.append((time.perf_counter() - t) * 1000)
                p50[name].append(statistics.median(lat))
                p99[name].append(_pct(lat, 0.99))
        for name in systems:
            figures[f"{name}_p50_ms"] = round(statistics.median(p50[name]), 3)
            figures[f"{name}_p99_ms"] = round(statistics.median(p99[name]), 3)
        qps: dict[str, list[float]] = {"tandem": [], "pyserini": []}
        qids = [str(i) for i in range(len(queries))]
        for _ in range(rounds):
            t = time.perf_counter()
            r.retrieve(queries, k)
            qps["tandem"].append(len(queries) / (time.perf_counter() - t))
            t = time.perf_counter()
            ls.batch_search(queries, qids, k, threads=2)
            qps["pyserini"].append(len(queries) / (time.perf_counter() - t))
        for name, values in qps.items():
            figures[f"{name}_batch_qps_2_threads"] = round(statistics.median(values), 1)
        r.close()
        ls.close()
        figures["p50_ratio_tandem_over_pyserini"] = round(figures["tandem_p50_ms"] / figures["pyserini_p50_ms"], 2)

        fresh = [Item(item_id=f"bench-{i}", title=f"{it.title} refreshed {i}") for i, it in enumerate(items[:2000])]
        with SparseRetriever(index_dir) as w:
            batch = 200 if not args.quick else 100
            n_batches = 5 if not args.quick else 3
            t = time.perf_counter()
            for b in range(n_batches):
                w.upsert(fresh[b * batch : (b + 1) * batch])
            figures["upsert_items_per_s_batch"] = round(n_batches * batch / (time.perf_counter() - t), 1)
            figures["upsert_batch_size"] = batch
            single = []
            for item in fresh[n_batches * batch : n_batches * batch + (10 if args.quick else 30)]:
                t = time.perf_counter()
                w.upsert([item])
                hits = w.retrieve([f"refreshed {item.item_id.split('-')[1]}"], 50)[0]
                single.append((time.perf_counter() - t) * 1000)
                assert item.item_id in {h.item_id for h in hits}, "upserted item not found"
            figures["upsert_single_to_searchable_p50_ms"] = round(statistics.median(single), 1)
            figures["upsert_single_items_per_s"] = round(1000 / statistics.median(single), 1)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"figures": figures}, indent=2))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench.sparse ({'quick' if args.quick else 'full'}): {len(items)} items, {len(queries)} queries, k={k}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, str(value))
    Console().print(table)


if __name__ == "__main__":
    main()
