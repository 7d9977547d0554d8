"""Ablation of the training strategies on the generative retriever v2, full catalog (issue 17, Build 5).

``python -m bench.strategies_v2 --model DIR --out FILE.json [--rows ...] [--budget-minutes M]``
re-runs stages 2–3 (memorise, align) of the v2 model in ``DIR`` — a ``tandem train
generative --profile full`` output, whose encoder is already adapted by stage 1 — once per
row, each from the same initialisation (node tables at the centroids, item rows at the
titles' vectors, zero correction) and with the same wall-clock training budget, and reports
dev nDCG@10 / R@10 / R@100 at init and after each stage, the doc→id exact-match on a sample
and the stage times. Row ``base`` is the ``full`` profile's recipe with curriculum, FGSM and
augmentation off (pseudo-queries on); every other row switches one strategy on (or, marked
``no_``, off) on top of it (``+fgsm`` is the ``full`` profile as it now is):

* ``no_pseudo``: no title-span pseudo-queries (``spans_per_item=0``);
* ``no_memorise``: no stage 2 (align's doc→id replay still teaches the titles);
* ``+augmentation``: rewritten copies of the training queries (``augment_share``);
* ``+curriculum``: align opens titles → spans → queries → rewrites epoch by epoch;
* ``+fgsm``: FGSM on the cached encoder states every 4th step (``fgsm_epsilon``);
* ``+prefix_negatives``: a parent-conditioned decoder with the beam-aware loss over 16
  parents (hard negatives from the beam; the default full softmax already makes every
  other item an in-batch/all-catalog negative);
* ``curriculum+fgsm``: the two that helped alone, together.

The encoder states come from the state caches of the run that trained ``DIR`` (same
texts and weights → same cache key under ``$TANDEM_HOME/cache/encoder-states``), so a row
costs only the decoder; texts no cache holds (the rewritten queries) are encoded once.
The whole-catalog exact-match check of a real run (~4 min) is left out: rows are compared
on the per-stage 4,000-item check.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

#: What every row starts from: the ``full`` profile with the strategies under test off (the
#: profile turns on the one that won here: FGSM, row ``+fgsm``).
BASE: dict[str, Any] = {"curriculum": False, "fgsm_epsilon": 0.0, "augment_share": 0.0}
#: Row name → TreeTrainConfig overrides on top of :data:`BASE`.
ROWS: dict[str, dict[str, Any]] = {
    "base": {},
    "no_pseudo": {"spans_per_item": 0},
    "no_memorise": {"memorise_epochs": 0},
    "+augmentation": {"augment_share": 0.2},
    "+curriculum": {"curriculum": True},
    "+fgsm": {"fgsm_epsilon": 0.05, "fgsm_every": 4},
    "+prefix_negatives": {"decoder": {"condition_on_prefix": True}, "beam_negatives": 16},
    "curriculum+fgsm": {"curriculum": True, "fgsm_epsilon": 0.05},
}


def _concat(a: Any, b: Any) -> Any:
    """One state cache holding ``a``'s texts and then ``b``'s."""
    import numpy as np

    from tandem.training.state_cache import StateCache

    offsets = np.concatenate([a.offsets, b.offsets[1:] + a.offsets[-1]])
    return StateCache(a.texts + b.texts, np.concatenate([a.pooled, b.pooled]), np.concatenate([a.flat, b.flat]),
                      offsets)


def load(model_dir: Path, seed: int) -> dict[str, Any]:
    """Catalog, pairs, dev set, the model's adapted encoder and ID map, and the state caches."""
    from tandem.catalog import read_qrels, read_queries
    from tandem.catalog.datasets import data_root
    from tandem.catalog.loaders import load_items
    from tandem.config import get_settings
    from tandem.generative.tree_artifact import load_tree_model
    from tandem.ids.idmap import item_text
    from tandem.training.data import training_pairs
    from tandem.training.tree_adapt import weights_fingerprint
    from tandem.training.tree_data import title_spans
    from tandem.training.tree_run import _cached_states

    root = data_root("homedepot")
    items = load_items(root / "products.jsonl").items
    pairs, _ = training_pairs(read_queries(root / "queries.train.tsv"), read_qrels(root / "qrels.train.txt"),
                              {it.item_id for it in items}, 3)
    dev = (read_queries(root / "queries.dev.tsv"), read_qrels(root / "qrels.dev.txt"))
    art = load_tree_model(model_dir)
    encoder = art.encoder
    encoder.fingerprint = weights_fingerprint(encoder.model)  # what the training run keyed its caches by
    cache_dir = get_settings().home / "cache" / "encoder-states"
    texts = [item_text(it) for it in items]
    docs = _cached_states(encoder, texts, cache_dir, print, "item texts")
    rng = random.Random(seed)
    spans = [s for t in texts for s in title_spans(t, 1, rng)]
    queries = _cached_states(encoder, [*spans, *(q for q, _ in pairs), *dev[0].values()], cache_dir, print,
                             "queries and title spans")
    return {"items": items, "pairs": pairs, "dev": dev, "encoder": encoder, "id_map": art.id_map,
            "docs": docs, "queries": queries, "cache_dir": cache_dir}


def run_row(name: str, data: dict[str, Any], budget: float, seed: int) -> dict[str, Any]:
    """Stages 2–3 of one row from the common initialisation; its per-stage figures."""
    import torch

    from tandem.training.tree_config import tree_profile
    from tandem.training.tree_trainer import TreeTrainer

    config = tree_profile("full", **{"seed": seed, "total_minutes": None, "budget_minutes": budget, **BASE,
                                     **ROWS[name]})
    queries = data["queries"]
    if config.augment_share:  # the rewritten queries' states: encoded once, beside the cached ones
        from tandem.training.state_cache import StateCache
        from tandem.training.tree_strategies import augmented_pairs

        known = set(queries.texts)
        extra = [q for q, _ in augmented_pairs(data["pairs"], config.augment_share, config.seed) if q not in known]
        if extra:
            queries = _concat(queries, StateCache.build(data["encoder"], list(dict.fromkeys(extra))))
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    trainer = TreeTrainer(config, data["items"], data["id_map"], data["pairs"], data["encoder"],
                          (data["docs"], queries), dev=data["dev"], echo=lambda s: print(f"  {name}: {s}", flush=True))
    trainer.loop.run(trainer.stages(), trainer._train_epoch)
    out: dict[str, Any] = {"overrides": ROWS[name], "wall_seconds": round(time.perf_counter() - t0, 1)}
    for stage, rec in trainer.stage_records.items():
        out[stage] = {"dev": {k: round(float(v), 4) for k, v in (rec.get("dev") or {}).items()},
                      "exact_match": round(rec["memorisation"]["exact_match"], 4),
                      **{k: rec[k] for k in ("seconds", "epochs", "samples", "stop_reason") if k in rec}}
    last = list(trainer.stage_records)[-1]
    out["final"] = {"stage": last, **out[last]["dev"], "exact_match": out[last]["exact_match"]}
    return out


def main() -> None:
    """Run the rows, print a line per row, write ``{"figures": {...}}``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True, help="a full-profile v2 model folder (stage 1 adapted)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    ap.add_argument("--rows", nargs="*", help=f"rows to run (default: all; names: {', '.join(ROWS)})")
    ap.add_argument("--budget-minutes", type=float, default=8.0, help="training budget of every row (stages 2-3)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    rows = args.rows or list(ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load(args.model, args.seed)
    figures: dict[str, Any] = {"model": str(args.model), "items": len(data["items"]), "pairs": len(data["pairs"]),
                               "budget_minutes": args.budget_minutes, "threads": torch.get_num_threads(), "rows": {}}
    if args.out.is_file():  # resume: rows already measured into this file are kept
        figures["rows"] = json.loads(args.out.read_text())["figures"].get("rows", {})
    for name in rows:
        if name in figures["rows"]:
            continue
        figures["rows"][name] = row = run_row(name, data, args.budget_minutes, args.seed)
        print(f"{name}: {json.dumps(row['final'])} ({row['wall_seconds']} s)", flush=True)
        args.out.write_text(json.dumps({"figures": figures}, indent=2))
    print(f"{'row':20} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'EM':>6}  stage")
    for name, row in figures["rows"].items():
        f = row["final"]
        print(f"{name:20} {f.get('ndcg@10', 0):8.4f} {f.get('r@10', 0):7.4f} {f.get('r@100', 0):7.4f} "
              f"{f['exact_match']:6.3f}  {f['stage']}")


if __name__ == "__main__":
    main()
