"""Monthly merge on the full Home Depot catalog (issue 21 item 3): does the merged base keep
what base + adapter found?

``python -m bench.merge --hd-base DIR --adapter DIR --out FILE.json``: ``--hd-base`` is a
full-profile v2 base trained on the catalog minus BENCHMARK.md's fresh items, ``--adapter``
an hourly adapter trained on it for the fresh items (``python -m bench.adapter --hd-base DIR
--adapter-out DIR``). The bench measures dev R@10 and nDCG@10 on the *fresh* queries (a fresh
relevant item, judged on those items) and the *old* ones (all their judgements) for base +
adapter, runs :func:`tandem.training.tree_merge.merge_base` (the step ``tandem pipelines
run merge`` runs), and measures the merged base alone, with no adapter. It reports the drops
in points, whether every ID is unchanged, how many items the new base holds, and the merge's
own gate (:func:`tandem_pipelines.merge_step.merge_gate`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.adapter import split_recall


def main() -> None:
    """Measure before, merge, measure after; print and write ``{"figures": {...}}``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hd-base", type=Path, required=True, help="v2 base trained without the fresh items")
    ap.add_argument("--adapter", type=Path, required=True, help="hourly adapter trained on --hd-base")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    ap.add_argument("--merged-out", type=Path, default=None, help="keep the merged base here (default: a temp dir)")
    ap.add_argument("--set", action="append", default=[], help="MergeConfig field=value (repeatable)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from tandem.catalog.datasets import data_root, fresh_split_qrels, is_fresh, load_homedepot
    from tandem.generative import load_retriever
    from tandem.ids.idmap import IdMap
    from tandem.training.tree_merge import MergeConfig, merge_base
    from tandem_pipelines.merge_step import merge_gate

    torch.set_num_threads(args.threads)
    ds = load_homedepot(data_root("homedepot"))
    fresh_ids = {it.item_id for it in ds.catalog.items if is_fresh(it.item_id)}
    splits = dict(zip(("fresh", "old"), fresh_split_qrels(ds.qrels["dev"], fresh_ids), strict=True))
    queries = ds.queries["dev"]

    def recall(retriever: Any) -> dict[str, float]:
        return split_recall(retriever, splits, queries)

    figures: dict[str, Any] = {"fresh_dev_queries": len(splits["fresh"]), "old_dev_queries": len(splits["old"])}
    figures |= {f"before.{k}": v for k, v in recall(load_retriever(args.hd_base, adapter=args.adapter)).items()}
    cfg = MergeConfig.model_validate(dict(pair.partition("=")[::2] for pair in args.set))
    with tempfile.TemporaryDirectory() as tmp:
        out = args.merged_out or Path(tmp) / "merged"
        t0 = time.perf_counter()
        summary = merge_base(args.hd_base, args.adapter, ds.catalog.items, out, cfg)
        figures["merge_seconds"] = round(time.perf_counter() - t0, 1)
        figures |= {f"after.{k}": v for k, v in recall(load_retriever(out)).items()}
        before_ids = IdMap.load(str(args.hd_base / "idmap"))
        merged_ids = IdMap.load(str(out / "idmap"))
        figures["ids_unchanged"] = all(merged_ids.codes(i) == before_ids.codes(i) for i in before_ids.item_ids())
        figures["merged_items"] = len(merged_ids.item_ids())
    for name in ("fresh", "old"):
        figures[f"{name}_R@10_drop_points"] = round(100 * (figures[f"before.{name}_R@10"] - figures[f"after.{name}_R@10"]), 2)
    figures["merge_gate"] = merge_gate(summary)
    figures["merge_metrics"] = summary["metrics"]
    args.out.write_text(json.dumps({"figures": figures}, indent=2))
    for key, value in figures.items():
        print(f"{key:32s} {value}")


if __name__ == "__main__":
    main()
