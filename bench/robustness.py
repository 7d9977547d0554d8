"""Robustness benchmark: RobustScore of BM25 (and optionally a generative model) per suite.

``python -m bench.robustness [--quick] --out FILE.json [--model DIR] [--system hybrid]``
evaluates the Home Depot dev queries clean and under the ``typo``, ``word`` and
``sentence`` suites of :mod:`tandem.eval.robustness` (seed 0) and reports nDCG@10, R@10,
R@100 and RobustScore = perturbed / clean per measure. The BM25 index is cached under
``$TANDEM_HOME/indexes`` (first build: a few minutes on 2 cores). ``--quick`` uses the
synthetic ``ci`` catalog (300 items, 300 dev queries) instead, finishing in about a minute.
``--model`` adds the generative model of that folder, ``--system hybrid`` the hybrid system.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

MEASURES = ["nDCG@10", "R(rel=4)@10", "R(rel=4)@100"]


def main() -> None:
    """Run the suites, print a table, write ``{"figures": {...}}``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="synthetic ci catalog instead of Home Depot dev")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    ap.add_argument("--model", type=Path, help="generative model folder to evaluate too")
    ap.add_argument("--system", action="append", default=[], help="further registered system (e.g. hybrid)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, help="evaluate the first N queries only")
    args = ap.parse_args()

    from tandem.catalog import read_qrels, read_queries
    from tandem.config import get_settings
    from tandem.eval import SystemSpec, build_system, run_retriever
    from tandem.eval.robustness import SUITES, evaluate_robustness

    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            from tandem_testing.synthetic_catalog import synthetic_catalog

            data = synthetic_catalog(300)
            catalog = Path(tmp) / "catalog.jsonl"
            catalog.write_text("".join(json.dumps(it.model_dump(exclude_none=True)) + "\n" for it in data.items))
            queries, qrels, name = data.dev_queries, data.dev_qrels, "synthetic ci dev"
        else:
            from tandem.catalog.datasets import data_root

            root = data_root("homedepot")
            catalog = root / "products.jsonl"
            queries, qrels = read_queries(root / "queries.dev.tsv"), read_qrels(root / "qrels.dev.txt")
            name = "Home Depot dev"
        if args.limit:
            queries = dict(list(queries.items())[: args.limit])
        spec = SystemSpec(catalog=catalog, model=args.model, home=get_settings().home)
        systems = ["bm25", *(["generative"] if args.model else []), *args.system]
        figures: dict[str, Any] = {"data": name, "queries": len(queries), "seed": args.seed, "systems": {}}
        for system in systems:
            retriever = build_system(system, spec)
            try:
                t0 = time.perf_counter()
                res = evaluate_robustness(lambda q, r=retriever: run_retriever(r, q, k=100), queries, qrels,
                                          MEASURES, SUITES, args.seed)
                res["seconds"] = round(time.perf_counter() - t0, 1)
            finally:
                retriever.close()
            figures["systems"][system] = res
    args.out.write_text(json.dumps({"figures": figures}, indent=2))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"robustness on {name} ({len(queries)} queries, seed {args.seed})")
    table.add_column("system")
    table.add_column("suite")
    for m in MEASURES:
        table.add_column(m, justify="right")
        table.add_column("RobustScore", justify="right")
    for system, res in figures["systems"].items():
        table.add_row(system, "clean", *[x for m in MEASURES for x in (f"{res['clean'][m]:.4f}", "")])
        for suite, fig in res["suites"].items():
            cells = []
            for m in MEASURES:
                score = fig["robust_score"][m]
                cells += [f"{fig['metrics'][m]:.4f}", "n/a" if score is None else f"{score:.3f}"]
            table.add_row(system, suite, *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
