"""Cost curves of the generative retriever v2 and BM25 as the catalog grows (issue 23 item 3).

On seeded synthetic catalogs of 10k, 100k and 1M items (titles from the Home Depot
vocabulary; item vectors a documented stand-in for the encoder — see
:mod:`bench.scale_parts`) it measures per size: semantic-ID build time, trie memory, decoder
memory, training throughput (the tree trainer's step), generative latency p50/p99 at beam
100 (real query encoder + trie-constrained decoding, batch 1), BM25 latency p50/p99 (k 100)
and the Lucene index size; fits a growth exponent ``b`` of ``y ~ n^b`` per figure (least
squares in log-log) and plots them (PNG). It also checks sharded serving on the largest
catalog: top 10 of 2 and 4 shards (:mod:`tandem.generative.tree_shards`) against one model.

    python -m bench.scale --out bench-scale.json [--plot bench-scale.png]
    python -m bench.scale --quick --out F     # 10k, 30k, 100k items: a few minutes on 2 cores

Figures the checks read: ``generative_latency_exponent`` (of the end-to-end p50) and
``shard_top10_overlap`` (the lower of 2 and 4 shards).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FULL_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000, 30_000, 100_000)
#: (figure key, label) pairs fitted and plotted.
FIGURES = (
    ("id_build_s", "semantic-ID build (s)"), ("trie_mb", "trie memory (MiB)"), ("decoder_mb", "decoder memory (MiB)"),
    ("train_samples_per_s", "training throughput (samples/s)"), ("gen_p50_ms", "generative p50 (ms)"),
    ("gen_p99_ms", "generative p99 (ms)"), ("decode_p50_ms", "decoding alone p50 (ms)"),
    ("gen_cpu_p50_ms", "generative CPU per query p50 (ms)"),
    ("bm25_p50_ms", "BM25 p50 (ms)"), ("bm25_index_mb", "BM25 index (MiB)"),
)


def growth_exponent(sizes: list[int], values: list[float]) -> float:
    """``b`` of the least-squares fit ``log y = a + b log n``."""
    if len(sizes) < 2 or min(values) <= 0:
        return float("nan")
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def shard_overlap(model: Any, index: Any, codes: Any, encoder: Any, queries: list[str], qvecs: Any,
                  counts: tuple[int, ...] = (2, 4), k: int = 10) -> dict[str, float]:
    """Top-``k`` overlap of merged shards with the unsharded decoder (beam 100, upper 1000); the
    query vectors ``qvecs`` are the stand-in's, in the items' space (at initialisation the decoder
    ranks by them alone), so the beams prune as a trained model's do."""
    import torch

    from tandem.generative.sharding import merge_hits
    from tandem.generative.tree_decoding import tree_beam_search
    from tandem.generative.tree_shards import shard_view
    from tandem.retriever import Hit

    ids, mask = encoder.tokenize(queries)
    with torch.inference_mode():
        states = encoder.states(ids, mask).float()
    q = torch.from_numpy(qvecs)
    beams = [1000] * (index.length - 1) + [100]

    def top(m: Any, ix: Any, rows: Any) -> list[list[Hit]]:
        nodes, scores = tree_beam_search(m, ix, q, states, mask, beams=beams)
        # equal scores by item id, as TreeRetriever.retrieve and merge_hits order them
        return [sorted((Hit(str(rows[n]), s, "g") for n, s in zip(rn, rs) if n >= 0),
                       key=lambda h: (-h.score, h.item_id)) for rn, rs in zip(nodes.tolist(), scores.tolist())]

    one = [[h.item_id for h in hs[:k]] for hs in top(model, index, np.arange(len(index.paths)))]
    out = {}
    for n in counts:
        parts = [top(*shard_view(model, index, codes, s, n)) for s in range(n)]
        merged = [[h.item_id for h in merge_hits([p[i] for p in parts], k, "g")] for i in range(len(queries))]
        out[f"shards_{n}_top{k}_overlap"] = sum(len(set(a) & set(b)) for a, b in zip(one, merged)) / sum(map(len, one))
    return out


def measure_size(n: int, vocab: Any, encoder: Any, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every figure for one catalog size (and the objects the shard check reuses)."""
    from bench import scale_parts as sp

    t0 = time.perf_counter()
    titles, bow = sp.synthetic_catalog(vocab, n, args.seed)
    vectors = sp.project(bow)
    row: dict[str, Any] = {"items": n, "synth_s": time.perf_counter() - t0}
    codes, row["id_build_s"] = sp.build_ids(titles, vectors, args.seed)
    index, trie = sp.trie_figures(codes)
    row.update(trie)
    model, dec = sp.decoder_for(index, vectors)
    row.update(dec)
    row["train_samples_per_s"] = sp.train_throughput(model, index, vectors, steps=args.train_steps, seed=args.seed)
    queries = sp.sample_queries(titles, args.queries, args.seed)
    row.update(sp.generative_latency(model, index, encoder, queries))
    if not args.no_bm25:
        row.update(sp.bm25_figures(titles, queries, work))
    row["_objects"] = (model, index, codes, queries)
    return row


def plot(rows: list[dict[str, Any]], exponents: dict[str, float], path: Path) -> None:
    """One log-log panel per figure, with its fitted exponent in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [(k, lbl) for k, lbl in FIGURES if all(k in r for r in rows)]
    cols = 3
    fig, axes = plt.subplots((len(keys) + cols - 1) // cols, cols, figsize=(13, 3.4 * ((len(keys) + cols - 1) // cols)))
    sizes = [r["items"] for r in rows]
    for ax, (key, label) in zip(axes.flat, keys):
        vals = [r[key] for r in rows]
        ax.loglog(sizes, vals, "o-")
        ax.set_title(f"{label}\nfitted exponent {exponents[key]:.2f}", fontsize=9)
        ax.set_xlabel("items")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle("Tandem cost curves (synthetic Home Depot-vocabulary catalogs; stand-in item vectors)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    """Measure, fit, plot; print the figures and write them to ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    ap.add_argument("--plot", type=Path, default=None, help="PNG of the curves (default: --out with .png)")
    ap.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES} instead of {FULL_SIZES}")
    ap.add_argument("--sizes", default="", help="comma-separated catalog sizes (overrides --quick)")
    ap.add_argument("--queries", type=int, default=0, help="timed queries per size (default 200, quick 100)")
    ap.add_argument("--train-steps", type=int, default=3, help="timed training steps (batch 64) per size")
    ap.add_argument("--no-bm25", action="store_true", help="skip the Lucene index (no JVM)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--products", type=Path, default=None, help="products.jsonl whose vocabulary titles use")
    args = ap.parse_args()

    import torch

    from bench import scale_parts as sp
    from tandem.encoder import TextEncoder

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",") if s] or list(QUICK_SIZES if args.quick else FULL_SIZES)
    args.queries = args.queries or (100 if args.quick else 200)
    if args.products is None:
        from tandem.catalog.datasets import data_root

        args.products = data_root("homedepot") / "products.jsonl"
    vocab = sp.Vocabulary(args.products)
    encoder = TextEncoder(max_length=32)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tandem-scale-") as tmp:
        for n in sizes:
            t0 = time.perf_counter()
            rows.append(measure_size(n, vocab, encoder, args, Path(tmp)))
            printable = {k: v for k, v in rows[-1].items() if not k.startswith("_")}
            print(f"{n} items ({time.perf_counter() - t0:.0f} s):", json.dumps(printable), flush=True)
            if len(rows) > 1:
                rows[-2].pop("_objects")  # keep only the largest size's model for the shard check
    model, index, codes, queries = rows[-1].pop("_objects")
    shards = shard_overlap(model, index, codes, encoder, queries, sp.query_vectors(vocab, queries))
    exponents = {key: growth_exponent([r["items"] for r in rows], [r[key] for r in rows])
                 for key, _ in FIGURES if all(key in r for r in rows)}
    result = {
        "sizes": sizes, "rows": rows, "exponents": exponents,
        "generative_latency_exponent": exponents["gen_p50_ms"],
        "decode_latency_exponent": exponents["decode_p50_ms"],
        "generative_cpu_exponent": exponents["gen_cpu_p50_ms"],
        "shard_top10_overlap": min(shards.values()), **shards,
        "stand_in": "item vectors = random projection of idf-weighted bag of words (384-d), not the encoder",
        "threads": args.threads,
    }
    png = args.plot or args.out.with_suffix(".png")
    plot(rows, exponents, png)
    result["plot"] = str(png)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2, default=float))


if __name__ == "__main__":
    main()
