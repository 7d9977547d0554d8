"""Multi-task fusion (issue 22 item 3): what λ per task (relevance, click, purchase) does on dev.

``python -m bench.feedback_fusion [--quick] --out FILE.json``. Simulated users
(:mod:`bench.feedback_sim`: cluster affinities, the affinity-aware cascade) search the Home
Depot training queries through the hybrid searcher (BM25, RRF); every search is written to the
request log (:class:`tandem.feedback.requests.RequestLog`, what the gateway's
``tandem.requests`` consumer keeps) and every click/purchase is a feedback event. The join
(:func:`~tandem.feedback.requests.behaviour_events`) gives the behaviour labels. A third of
the training queries keep their judgements hidden (traffic nobody judged: behaviour labels
only). Then one learned fusion (LambdaMART over the recorded lists, :func:`fit_learned_fusion`)
is trained per λ setting, and measured on dev queries: nDCG@10 on the qrels, and clicks and
purchases per search of simulated users (``REPEATS`` sessions per dev query; the same users,
seeds and queries for every λ).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.feedback_sim import cascade, make_users

SEED = 2207
LAMBDAS = ((1.0, 0.0, 0.0), (1.0, 1.0, 0.0), (1.0, 1.0, 2.0), (1.0, 3.0, 6.0), (0.0, 1.0, 2.0))
"""(relevance, click, purchase) weights tried."""
REPEATS = 10
"""Simulated sessions per dev query for the behaviour measures (the same for every λ)."""


def main() -> None:
    """Simulate, join, train one fusion per λ, measure on dev, write ``{"figures": ...}``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller pools, 6,000 unjudged items in the index")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--model", type=Path, default=Path("/work/v3/full"), help="v2 model (the items' ID clusters)")
    args = ap.parse_args()

    from bench.feedback import Ranker, _events
    from tandem.catalog.datasets import data_root
    from tandem.catalog.loaders import load_items
    from tandem.catalog.queries import read_qrels, read_queries
    from tandem.eval.metrics import evaluate
    from tandem.feedback.requests import RequestLog, RequestRecord, behaviour_events
    from tandem.fusion.fit import fit_learned_fusion
    from tandem.fusion.learned import catalog_titles
    from tandem.personal import ItemVectors
    from tandem.search import InMemoryCatalog
    from tandem.sparse import SparseConfig, build_index

    started, rng = time.monotonic(), random.Random(SEED)
    data = data_root("homedepot")
    n_train, n_dev, n_users, per_user = (1500, 300, 300, 8) if args.quick else (6000, 1000, 1200, 8)
    tq, tr = read_queries(data / "queries.train.tsv"), read_qrels(data / "qrels.train.txt")
    dq, dr = read_queries(data / "queries.dev.tsv"), read_qrels(data / "qrels.dev.txt")
    pick = lambda qs, rel, n: sorted(rng.sample(sorted(q for q in qs if q in rel), n))  # noqa: E731
    train_ids, dev_ids = pick(tq, tr, n_train), pick(dq, dr, n_dev)
    hidden = set(train_ids[::3])  # judged by nobody: behaviour labels only
    items = load_items(data / "products.jsonl").items
    if args.quick:
        judged = {d for q in train_ids for d in tr[q]} | {d for q in dev_ids for d in dr[q]}
        items = [it for it in items if it.item_id in judged] + rng.sample(
            [it for it in items if it.item_id not in judged], 6_000)
    vectors = ItemVectors.from_tree_model(args.model)
    codes = {it.item_id: vectors.code(it.item_id) for it in items if it.item_id in vectors}
    users = make_users(n_users, "m", {q: tr[q] for q in train_ids}, codes, rng)
    figures: dict[str, Any] = {"items": len(items), "train_queries": len(train_ids), "hidden_qrels": len(hidden),
                               "dev_queries": len(dev_ids), "lambdas": {}}
    with tempfile.TemporaryDirectory(prefix="bench-fusion-") as tmp:
        build_index(items, Path(tmp) / "index", SparseConfig(index_threads=2))
        ranker = Ranker(Path(tmp) / "index")
        log = RequestLog(Path(tmp) / "requests.sqlite")
        lists: dict[str, Any] = {}
        ranked_of: dict[str, list[str]] = {}
        for q in train_ids + dev_ids:
            ranked_of[q], lists[q] = ranker.search((tq | dq)[q])
        feedback, now = [], time.time() - 86400
        for u in users:  # traffic: each user searches per_user training queries
            for s, q in enumerate(rng.sample(train_ids, per_user)):
                rid = f"{u.user_id}-{s}"
                log.add([RequestRecord(rid, u.user_id, tq[q], tuple(ranked_of[q][:10]), now)])
                feedback += _events(u.user_id, rid, ranked_of[q], cascade(u, ranked_of[q], tr[q], codes, rng), now)
        events, extra = behaviour_events(log, feedback, {q: tq[q] for q in train_ids})
        figures |= {"searches": len(log), "feedback_events": len(feedback), "queries_with_behaviour": len(events),
                    "behaviour_only_queries": sum(q in hidden for q in events) + len(extra)}
        qrels = {q: tr[q] for q in train_ids if q not in hidden}
        titles = catalog_titles(InMemoryCatalog(items))
        testers = make_users(50, "t", {q: dr[q] for q in dev_ids}, codes, random.Random(SEED + 1))

        def behaviour(run: dict[str, list[str]]) -> tuple[float, float]:
            r = random.Random(SEED + 2)
            acts = [cascade(testers[(n * 7 + k) % len(testers)], run[q], dr[q], codes, r)
                    for n, q in enumerate(dev_ids) for k in range(REPEATS)]
            return (statistics.mean(sum(a == "click" for _, a in x) for x in acts),
                    statistics.mean(sum(a == "purchase" for _, a in x) for x in acts))

        base_run = {q: ranked_of[q][:10] for q in dev_ids}
        res = evaluate({q: [(i, 10.0 - n) for n, i in enumerate(base_run[q])] for q in dev_ids},
                       {q: dr[q] for q in dev_ids}, ["nDCG@10"])
        clicks, buys = behaviour(base_run)
        figures["rrf"] = {"ndcg@10": round(float(res.metrics["nDCG@10"]), 4), "clicks_per_search": round(clicks, 4),
                          "purchases_per_search": round(buys, 4)}
        for lam in LAMBDAS:
            model, _ = fit_learned_fusion({q: lists[q] for q in train_ids}, qrels, titles=titles, seed=SEED,
                                          events=events, relevance_weight=lam[0], click_weight=lam[1],
                                          purchase_weight=lam[2])
            run = {q: [h.item_id for h in model.fuse(lists[q], 10)] for q in dev_ids}
            res = evaluate({q: [(i, 10.0 - n) for n, i in enumerate(run[q])] for q in dev_ids},
                           {q: dr[q] for q in dev_ids}, ["nDCG@10"])
            clicks, buys = behaviour(run)
            figures["lambdas"]["rel={} click={} purchase={}".format(*lam)] = {
                "ndcg@10": round(float(res.metrics["nDCG@10"]), 4), "clicks_per_search": round(clicks, 4),
                "purchases_per_search": round(buys, 4)}
            print(lam, figures["lambdas"]["rel={} click={} purchase={}".format(*lam)], flush=True)
        log.close()
        ranker.close()
    figures["seconds"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps({"figures": figures}, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
