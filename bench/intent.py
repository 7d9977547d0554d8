"""Intent decomposition + fusion on Home Depot dev: quality and added latency.

``python -m bench.intent [--quick] --out FILE.json`` (data: ``../shared/data/homedepot``):

1. builds a BM25 index of the catalog and fits the intent decomposer on its titles;
2. retrieves the whole query and every sub-query of each train and dev query (depth 100);
3. trains LambdaMART fusion on train queries (selected on half of dev — ``dev-a`` — and
   *reported on the other half*, ``dev-b``, so selection does not inflate the figure; the
   other systems are reported on both halves and on all of dev);
4. reports nDCG@10, R@10, R@100, RR@10 (relevant = grade >= 4), wins/losses and paired
   significance against BM25, and the p50/p95 latency that intent decomposition and each fusion
   add per query (retrieval of the extra sub-queries is reported separately). The generative
   item scores learned fusion also uses, with that fusion over up to 200 candidates of the
   full catalog, are timed by ``bench.fusion_scores`` (issue 18: <= 5 ms p50 added).

``--model DIR`` (optionally ``--adapter DIR``) adds the generative retriever as a second
source: its list of the whole query (``--gen-depth`` beams) joins every fusion, giving the
dev table of BM25, generative, RRF, normalised and learned fusion, each with and without
intent decomposition.

``--quick``: 600 train / 200 dev queries over their judged items plus 3,000 others
(about a minute); absolute numbers then read higher than on the full catalog.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

MEASURES = ["nDCG@10", "R(rel=4)@10", "R(rel=4)@100", "RR(rel=4)@10"]
DEPTH = 100


def _data_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "homedepot"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def main() -> None:  # noqa: PLR0915 - one linear script
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small subset, about a minute")
    ap.add_argument("--out", required=True, help="JSON file for the figures")
    ap.add_argument("--index", help="reuse this Lucene index of the full catalog instead of building one")
    ap.add_argument("--train-queries", type=int, default=3000, help="train queries for learned fusion (full run)")
    ap.add_argument("--save-dir", help="also save the fitted decomposer and learned fusion here")
    ap.add_argument("--model", help="generative model folder: adds the generative source to every fusion")
    ap.add_argument("--adapter", help="adapter folder trained on --model (fresh items)")
    ap.add_argument("--gen-depth", type=int, default=20, help="beams (and list depth) of the generative source")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from tandem.catalog.datasets import load_homedepot
    from tandem.eval.metrics import evaluate, paired_significance
    from tandem.fusion import RRF, RankedList, ScoreFusion
    from tandem.fusion.learned import LearnedFusion, examples, title_lookup
    from tandem.intent import CatalogIntentDecomposer
    from tandem.intent.base import FILTER_INTENT, Intent
    from tandem.jvm import ensure_jvm

    ensure_jvm()
    from tandem.sparse import SparseConfig, SparseRetriever, build_index

    rng = random.Random(13)
    ds = load_homedepot(_data_dir())
    items = ds.catalog.items
    train_q, dev_q = ds.queries["train"], ds.queries["dev"]
    qrels = {**ds.qrels["train"], **ds.qrels["dev"]}
    train_ids = sorted(q for q in train_q if q in qrels)
    dev_ids = sorted(q for q in dev_q if q in qrels)
    rng.shuffle(train_ids)
    if args.quick:
        train_ids, dev_ids = train_ids[:600], rng.sample(dev_ids, 200)
        keep = {i for q in train_ids + dev_ids for i in qrels[q]}
        others = [it for it in items if it.item_id not in keep]
        items = [it for it in items if it.item_id in keep] + rng.sample(others, 3000)
    else:
        train_ids = train_ids[: args.train_queries]
    titles = {it.item_id: it.title for it in items}
    figures: dict[str, float | int | str] = {"items": len(items), "train_queries": len(train_ids),
                                             "dev_queries": len(dev_ids), "depth": DEPTH}

    t0 = time.perf_counter()
    decomposer = CatalogIntentDecomposer.fit([it.title for it in items], [it.price for it in items],
                                             max_titles=2000 if args.quick else 8000)
    figures["intent_fit_s"] = round(time.perf_counter() - t0, 1)

    with tempfile.TemporaryDirectory(prefix="bench-intent-") as tmp:
        index_dir = Path(args.index) if args.index and not args.quick else Path(tmp) / "index"
        if index_dir == Path(tmp) / "index":
            build_index(items, index_dir, SparseConfig(index_threads=2))
        bm25 = SparseRetriever(index_dir, SparseConfig(search_threads=2), writable=False)

        def lists_for(qids: list[str], texts: dict[str, str]) -> tuple[dict, dict, float]:
            """Per query: the plain BM25 list and the per-intent lists (one batched call)."""
            intents = {q: [i for i in decomposer.decompose(texts[q]) if i.kind != FILTER_INTENT] for q in qids}
            flat = [(q, i) for q in qids for i in [Intent(texts[q]), *intents[q]]]
            started = time.perf_counter()
            hits = bm25.retrieve([i.text for _, i in flat], DEPTH)
            took = time.perf_counter() - started
            plain, per_intent = {}, {q: [] for q in qids}
            seen: set[str] = set()
            for (q, intent), hs in zip(flat, hits, strict=True):
                if q not in seen:
                    seen.add(q)
                    plain[q] = RankedList("bm25", hs, intent.text, 1.0, "query")
                else:
                    per_intent[q].append(RankedList("bm25", hs, intent.text, intent.weight, intent.kind))
            return plain, per_intent, took

        t0 = time.perf_counter()
        train_plain, train_lists, _ = lists_for(train_ids, train_q)  # first: it also warms the JIT
        dev_plain, dev_lists, dev_retrieve_s = lists_for(dev_ids, dev_q)
        figures["retrieval_s"] = round(time.perf_counter() - t0, 1)
        n_queries = sum(len(v) for v in dev_lists.values())
        figures["sub_queries_per_query"] = round(n_queries / len(dev_ids), 2)
        figures["decomposed_share"] = round(sum(len(v) > 1 for v in dev_lists.values()) / len(dev_ids), 3)
        bm25.close()
    gen: dict[str, RankedList] = {}
    if args.model:
        from tandem.generative.retriever import GenerativeRetriever

        retriever = GenerativeRetriever(args.model, adapter=args.adapter, num_beams=args.gen_depth)
        started = time.perf_counter()
        for ids, texts in ((train_ids, train_q), (dev_ids, dev_q)):
            hits = retriever.retrieve([texts[q] for q in ids], args.gen_depth)
            gen |= {q: RankedList("generative", hs, texts[q], 1.0, "query") for q, hs in zip(ids, hits, strict=True)}
        figures["generative_ms_per_query"] = round((time.perf_counter() - started) * 1000 / len(gen), 2)
        figures["generative_depth"] = args.gen_depth
        retriever.close()
        # Every fusion below sees the generative list beside the BM25 lists.
        train_plain_lists = {q: [train_plain[q], gen[q]] for q in train_ids}
        train_lists = {q: [*train_lists[q], gen[q]] for q in train_ids}
        dev_lists = {q: [*dev_lists[q], gen[q]] for q in dev_ids}
        dev_plain_lists = {q: [dev_plain[q], gen[q]] for q in dev_ids}
    else:
        train_plain_lists = {q: [train_plain[q]] for q in train_ids}
        dev_plain_lists = {q: [dev_plain[q]] for q in dev_ids}

    lookup = title_lookup(titles)
    half = len(dev_ids) // 2
    dev_a, dev_b = dev_ids[:half], dev_ids[half:]
    t0 = time.perf_counter()
    learned_plain, info_plain = LearnedFusion.train(
        examples(train_plain_lists, qrels), examples({q: dev_plain_lists[q] for q in dev_a}, qrels), titles=lookup)
    learned_int, info_int = LearnedFusion.train(
        examples(train_lists, qrels), examples({q: dev_lists[q] for q in dev_a}, qrels), titles=lookup)
    figures["learned_train_s"] = round(time.perf_counter() - t0, 1)
    figures["learned_selected"] = json.dumps({"bm25_only": info_plain, "with_intents": info_int})
    if args.save_dir:
        decomposer.save(Path(args.save_dir) / "intent")
        learned_int.save(Path(args.save_dir) / "fusion-learned.json")

    plain_name = "bm25 + generative" if gen else "bm25 list"
    systems = {
        "bm25": lambda q: dev_plain[q].hits[:DEPTH],
        f"learned ({plain_name})": lambda q: learned_plain.fuse(dev_plain_lists[q], DEPTH),
    }
    fusers = {"rrf": RRF(), "minmax": ScoreFusion("minmax"), "zscore": ScoreFusion("zscore"),
              "learned": learned_int}
    if gen:
        systems["generative"] = lambda q: gen[q].hits[:DEPTH]
        for name in ("rrf", "minmax", "zscore"):
            fuser = fusers[name]
            systems[f"{name} ({plain_name})"] = lambda q, f=fuser: f.fuse(dev_plain_lists[q], DEPTH)
    latency: dict[str, list[float]] = {}
    intent_ms = []
    for q in dev_ids:
        started = time.perf_counter()
        decomposer.decompose(dev_q[q])
        intent_ms.append((time.perf_counter() - started) * 1000)
    for name, fuser in fusers.items():
        runs = {}
        ms = []
        for q in dev_ids:
            started = time.perf_counter()
            runs[q] = fuser.fuse(dev_lists[q], DEPTH)
            ms.append((time.perf_counter() - started) * 1000)
        latency[name] = ms
        systems[f"{name} + intents"] = runs.__getitem__
    figures["intent_p50_ms"] = round(_pct(intent_ms, 0.5), 3)
    figures["intent_p95_ms"] = round(_pct(intent_ms, 0.95), 3)
    for name, ms in latency.items():
        figures[f"fusion_{name}_p50_ms"] = round(_pct(ms, 0.5), 3)
        figures[f"fusion_{name}_p95_ms"] = round(_pct(ms, 0.95), 3)
        figures[f"intent_plus_{name}_p50_ms"] = round(_pct([a + b for a, b in zip(intent_ms, ms)], 0.5), 3)
    figures["bm25_retrieval_ms_per_list"] = round(dev_retrieve_s * 1000 / (n_queries + len(dev_ids)), 3)

    table = Table(title=f"bench.intent ({'quick' if args.quick else 'full'}): {len(dev_ids)} dev queries "
                        f"(learned: reported on dev-b, {len(dev_b)} queries)")
    for col in ["system", "split", *MEASURES, "wins/losses vs bm25 (nDCG@10)", "p (randomisation)"]:
        table.add_column(col)
    base = {}
    for name, fn in systems.items():
        run = {}
        for q in dev_ids:
            hits = fn(q)
            run[q] = [(h.item_id, float(h.score)) for h in hits]
        for split, qs in (("dev", dev_ids), ("dev-b", dev_b)):
            if name.startswith("learned") and split == "dev":
                continue  # selected on dev-a: only dev-b is an honest figure
            res = evaluate(run, qrels, MEASURES, queries=qs)
            if name == "bm25":
                base[split] = res
            b = base[split]
            wins = sum(res.per_query[q]["nDCG@10"] > b.per_query[q]["nDCG@10"] + 1e-9 for q in qs)
            losses = sum(res.per_query[q]["nDCG@10"] < b.per_query[q]["nDCG@10"] - 1e-9 for q in qs)
            p = 1.0 if name == "bm25" else \
                paired_significance(b, res, ["nDCG@10"], trials=2000)[0].randomisation_p_value
            key = f"{name}|{split}"
            for m in MEASURES:
                figures[f"{key}|{m}"] = round(res.metrics[m], 4)
            figures[f"{key}|wins"], figures[f"{key}|losses"], figures[f"{key}|p_ndcg"] = wins, losses, round(p, 4)
            table.add_row(name, split, *[f"{res.metrics[m]:.4f}" for m in MEASURES], f"{wins}/{losses}", f"{p:.3f}")
    Console().print(table)
    lat = Table(title="added latency per query (ms, CPU)")
    for col in ["stage", "p50", "p95"]:
        lat.add_column(col)
    lat.add_row("intent decomposition", f"{figures['intent_p50_ms']}", f"{figures['intent_p95_ms']}")
    for name in fusers:
        lat.add_row(f"fusion: {name}", f"{figures[f'fusion_{name}_p50_ms']}", f"{figures[f'fusion_{name}_p95_ms']}")
    lat.add_row("BM25 per extra sub-query list (batched)", f"{figures['bm25_retrieval_ms_per_list']}", "")
    Console().print(lat)
    Path(args.out).write_text(json.dumps({"figures": figures}, indent=2))


if __name__ == "__main__":
    main()
