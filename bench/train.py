"""Generative-retriever training benchmark on the synthetic ``ci`` catalog.

``python -m bench.train [--quick] --out FILE.json`` trains the ``ci`` profile (stages 1–3)
on the deterministic synthetic catalog (300 items; ``--quick``: 150 items, alignment cut
to 2 epochs) and reports memorisation (exact- and prefix-match after stage 2 and at the
end), dev retrieval quality of the generative retriever alone (R@10, nDCG@10, RR@10 against
a random baseline), training throughput and wall time, and decoding latency per query.
``--threads`` (default 1) sets torch's CPU threads: on a shared 2-core machine one thread
is the fast setting (see ``TrainConfig.threads``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    """Run the benchmark, print a table, write ``{"figures": {...}}``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="150 items, 2 alignment epochs (about a minute)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads during training")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()

    import torch

    from tandem.eval import evaluate, run_retriever
    from tandem.generative.retriever import GenerativeRetriever
    from tandem.ids import build_semantic_ids
    from tandem.training.config import id_config, profile_config
    from tandem.training.data import training_pairs
    from tandem_testing.synthetic_catalog import synthetic_catalog
    from tandem.training.trainer import StagedTrainer

    n_items = 150 if args.quick else 300
    data = synthetic_catalog(n_items)
    overrides: dict[str, object] = {"seed": args.seed, "threads": args.threads}
    if args.quick:
        overrides["align_epochs"] = 2
    config = profile_config("ci", **overrides)
    id_map = build_semantic_ids(data.items, id_config("ci").model_copy(update={"seed": args.seed}))
    pairs, _ = training_pairs(data.train_queries, data.train_qrels, set(id_map.item_ids()), config.min_grade)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = StagedTrainer(config, data.items, id_map, pairs, Path(tmp), progress=False).run()
        wall = time.perf_counter() - t0
        torch.set_num_threads(args.threads)
        retriever = GenerativeRetriever(tmp, num_beams=10, device="cpu")
        t1 = time.perf_counter()
        run = run_retriever(retriever, data.dev_queries, k=10, batch_size=32)
        decode_ms = (time.perf_counter() - t1) * 1000 / len(data.dev_queries)
    metrics = evaluate(run, data.dev_qrels, ["R(rel=4)@10", "nDCG@10", "RR(rel=4)@10"]).metrics
    mem = summary["stages"]["memorise"]["memorisation"]
    figures: dict[str, float | int | str | bool] = {
        "items": n_items, "train_pairs": len(pairs), "dev_queries": len(data.dev_queries),
        "parameters": summary["parameters"], "threads": args.threads, "bf16_autocast": summary["bf16_autocast"],
        "memorise_epochs": summary["stages"]["memorise"]["epochs"],
        "memorise_exact_match": mem["exact_match"], "memorise_prefix_match": mem["mean_prefix_match"],
        "final_exact_match": summary["final_memorisation"]["exact_match"],
        "final_prefix_match": summary["final_memorisation"]["mean_prefix_match"],
        "dev_R@10": round(metrics["R(rel=4)@10"], 4), "dev_nDCG@10": round(metrics["nDCG@10"], 4),
        "dev_RR@10": round(metrics["RR(rel=4)@10"], 4), "random_R@10": round(10 / n_items, 4),
        "train_seconds": summary["train_seconds"], "wall_seconds": round(wall, 1),
        "samples_per_s": summary["samples_per_s"], "peak_rss_mb": summary["peak_rss_mb"],
        "decode_ms_per_query_beam10": round(decode_ms, 2),
    }
    args.out.write_text(json.dumps({"figures": figures}, indent=2))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"generative training, ci profile, synthetic catalog ({n_items} items)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, str(value))
    Console().print(table)


if __name__ == "__main__":
    main()
