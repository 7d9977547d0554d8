"""Ablation of the training strategies (issue 6) on the synthetic ``ci`` catalog.

``python -m bench.strategies [--quick] --out FILE.json`` trains the ``ci`` profile once per
row — the base recipe, then the base recipe plus one strategy (pseudo-queries, the
id→query round, BM25-hard negatives with a margin loss, curriculum, augmentation, FGSM
adversarial training; stage 3 through a merged LoRA or IA³ adapter instead of full
fine-tuning) — with the same epochs per row, and reports for each: final
memorisation exact-match, dev R@10 and nDCG@10 of the generative retriever alone, the
typo-suite RobustScore of R@10, the parameters stage 3 trains, and training seconds. A BM25 row over the same catalog
gives the reference (and the hard negatives). ``--quick`` (about a minute): 100 items, one
alignment epoch, the base and ``+pseudo`` rows, no BM25 unless a chosen row needs it.
``--rows`` picks rows by name; ``--budget-minutes`` gives every row the same wall-clock
training budget (rows still stop earlier when their epochs are done). ``--hd-sample N`` runs the rows on a Home Depot sample
instead of the synthetic catalog: N random dev queries (seeded), every item judged for
them (the catalog; so R@k counts all their relevant items), and the train queries with a
relevant item in that catalog as training pairs (the data stays in the shared folder).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

#: What every row starts from: the ci profile with every strategy off (the profile's
#: default recipe turns ``pseudo_queries`` on; here it is one row of the ablation).
BASE: dict[str, Any] = {"pseudo_queries": 0}
#: Row name → TrainConfig overrides on top of :data:`BASE`.
ROWS: dict[str, dict[str, Any]] = {
    "base": {},
    "+pseudo": {"pseudo_queries": 4},
    "+id2q_round": {"id2q_round": True, "id2q_per_item": 2, "round_trip_k": 10, "id2q_epochs": 1},
    "+hard_negatives": {"rank_loss": "margin", "hard_negatives": 4},
    "+curriculum": {"curriculum": True, "adaptive_alpha": 2.0},
    "+augmentation": {"augment_share": 0.2},
    "+adversarial": {"fgsm_epsilon": 0.01, "fgsm_every": 4},
    "lora_align": {"align_peft": "lora"},
    "ia3_align": {"align_peft": "ia3"},
}
QUICK_ROWS = ["base", "+pseudo"]
R10, NDCG = "R(rel=4)@10", "nDCG@10"


def homedepot_sample(n_queries: int, seed: int) -> Any:
    """A :class:`~tandem_testing.synthetic_catalog.SyntheticSet`-shaped Home Depot sample (see module doc)."""
    import numpy as np

    from tandem.catalog import read_qrels, read_queries
    from tandem.catalog.datasets import data_root
    from tandem.catalog.loaders import load_items
    from tandem_testing.synthetic_catalog import SyntheticSet

    root = data_root("homedepot")
    dev_q, dev_r = read_queries(root / "queries.dev.tsv"), read_qrels(root / "qrels.dev.txt")
    train_q, train_r = read_queries(root / "queries.train.tsv"), read_qrels(root / "qrels.train.txt")
    judged = sorted(q for q in dev_r if q in dev_q and any(g >= 4 for g in dev_r[q].values()))
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(judged, size=min(n_queries, len(judged)), replace=False).tolist())
    wanted = {i for q in picked for i in dev_r[q]}
    items = [it for it in load_items(root / "products.jsonl").items if it.item_id in wanted]
    known = {it.item_id for it in items}
    tq = {q: t for q, t in train_q.items() if any(i in known and g >= 4 for i, g in train_r.get(q, {}).items())}
    tr = {q: {i: g for i, g in train_r[q].items() if i in known} for q in tq}
    return SyntheticSet(items, tq, tr, {q: dev_q[q] for q in picked}, {q: dev_r[q] for q in picked})


def main() -> None:
    """Run the ablation, print a table, write ``{"figures": {...}}``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="100 items, 1 alignment epoch, 2 rows")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    ap.add_argument("--rows", nargs="*", help=f"rows to run (default: all; names: {', '.join(ROWS)})")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--hd-sample", type=int, metavar="N", help="Home Depot sample of N dev queries instead")
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help="the same wall-clock training budget for every row (time_budget_minutes)")
    args = ap.parse_args()

    import torch

    from tandem.eval import evaluate, run_retriever
    from tandem.eval.robustness import perturb_queries
    from tandem.generative.retriever import GenerativeRetriever
    from tandem.ids import build_semantic_ids
    from tandem.training.config import id_config, profile_config
    from tandem.training.data import training_pairs
    from tandem_testing.synthetic_catalog import synthetic_catalog
    from tandem.training.trainer import StagedTrainer

    rows = args.rows or (QUICK_ROWS if args.quick else list(ROWS))
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    n_items = 100 if args.quick else 300
    data = homedepot_sample(args.hd_sample, args.seed) if args.hd_sample else synthetic_catalog(n_items)
    n_items = len(data.items)
    base: dict[str, Any] = {"seed": args.seed, "threads": args.threads}
    if args.quick:
        base.update(align_epochs=1, memorise_max_epochs=15)
    if args.budget_minutes:
        base["time_budget_minutes"] = args.budget_minutes
    id_map = build_semantic_ids(data.items, id_config("ci").model_copy(update={"seed": args.seed}))
    pairs, _ = training_pairs(data.train_queries, data.train_qrels, set(id_map.item_ids()), 4)
    typo_dev = perturb_queries(data.dev_queries, "typo", seed=args.seed)
    figures: dict[str, Any] = {"data": f"homedepot sample ({args.hd_sample} dev queries)" if args.hd_sample
                               else "synthetic", "items": n_items, "train_pairs": len(pairs), "dev_queries": len(data.dev_queries),
                               "threads": args.threads, "rows": {}}

    def measure(retriever: Any) -> dict[str, float]:
        clean = evaluate(run_retriever(retriever, data.dev_queries, k=10), data.dev_qrels, [R10, NDCG]).metrics
        typo = evaluate(run_retriever(retriever, typo_dev, k=10), data.dev_qrels, [R10]).metrics
        return {"dev_R@10": round(clean[R10], 4), "dev_nDCG@10": round(clean[NDCG], 4),
                "typo_R@10": round(typo[R10], 4),
                "robust_score_typo_R@10": round(typo[R10] / clean[R10], 4) if clean[R10] else None}

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bm25_run: dict[str, list[str]] | None = None
        if not args.quick or any(ROWS[r].get("hard_negatives") for r in rows):
            from tandem.jvm import ensure_jvm

            ensure_jvm()
            from tandem.sparse import SparseRetriever, build_index

            build_index(data.items, tmp / "bm25")
            with SparseRetriever(tmp / "bm25", writable=False) as bm25:
                figures["rows"]["bm25"] = measure(bm25)
                texts = sorted({q for q, _ in pairs})
                hits = bm25.retrieve(texts, 20)
                bm25_run = {q: [h.item_id for h in hs] for q, hs in zip(texts, hits, strict=True)}
        for name in rows:
            config = profile_config("ci", **{**base, **BASE, **ROWS[name]})
            out = tmp / name.strip("+")
            t0 = time.perf_counter()
            summary = StagedTrainer(config, data.items, id_map, pairs, out, progress=False, device="auto",
                                    bm25_run=bm25_run).run()
            wall = time.perf_counter() - t0
            torch.set_num_threads(args.threads)
            retriever = GenerativeRetriever(out, num_beams=10)
            row = {"final_exact_match": summary["final_memorisation"]["exact_match"], **measure(retriever),
                   "train_seconds": summary["train_seconds"], "wall_seconds": round(wall, 1),
                   "strategies": summary["strategies"]}
            peft = summary["strategies"].get("align_peft")
            row["stage3_trainable_params"] = peft["trainable"] if peft else summary["parameters"]
            retriever.close()
            figures["rows"][name] = row
            print(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'strategies'})}", flush=True)
    args.out.write_text(json.dumps({"figures": figures}, indent=2))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"training strategies, ci profile, {figures['data']} ({n_items} items, seed {args.seed})")
    cols = ["final_exact_match", "dev_R@10", "dev_nDCG@10", "typo_R@10", "robust_score_typo_R@10",
            "stage3_trainable_params", "train_seconds"]
    table.add_column("row")
    for c in cols:
        table.add_column(c, justify="right")
    for name, row in figures["rows"].items():
        table.add_row(name, *(str(row.get(c, "")) for c in cols))
    Console().print(table)


if __name__ == "__main__":
    main()
