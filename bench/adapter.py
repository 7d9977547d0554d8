"""Hourly-adapter benchmark on the synthetic ``ci`` catalog with BENCHMARK.md's fresh-item split.

``python -m bench.adapter [--quick] --out FILE.json`` trains the ``ci`` base on the catalog
minus its fresh items (``catalog.datasets.is_fresh``), then LoRA adapters on the fresh
items in five variants — replay 50 % / 20 % / none, EWC on / off — and reports, on the held-out
dev queries (phrasings never trained on), fresh-item R@10 (new-item recall) and old-item
R@10 (forgetting) before and after each adapter, plus adapter training time and size.

Default: 600 items (33 fresh); ``--quick``: 200 items, 2 variants (replay on/off), 10 epochs.
``--base DIR`` reuses a base trained by an earlier run on the same catalog (``--items``).

``--scale N`` instead times adapter training for ``N`` new items (BENCHMARK.md's fresh
split of Home Depot has about 2,700) on a ``ci``-size base with ``N`` + 3,000 items and
the ``full`` ID shape. The base is random-init: training time does not depend on what the
weights hold. ``--scale-epochs`` epochs run (default 1) and the time of the default
number of epochs is projected linearly from them (every epoch sees the same examples).

``--hd-base DIR`` is the full-profile run on Home Depot: ``DIR`` is a base trained on the
catalog minus its fresh items (``tandem train generative --profile full`` on that split).
One adapter (``--replay``, ``--ewc``, ``--epochs``) is trained on the ~2,800 fresh items,
with the old items for replay and the forgetting check, and dev R@10 is reported before
and after it: *fresh* = dev queries with a fresh relevant item, measured on those items
(new-item recall); *old* = the other dev queries, all their judgements (forgetting).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

K = 10
MEASURE = f"R(rel=4)@{K}"


def split(n_items: int) -> tuple[Any, list[Any], list[Any]]:
    """The synthetic set and its old / fresh items."""
    from tandem.catalog.datasets import is_fresh
    from tandem_testing.synthetic_catalog import synthetic_catalog

    data = synthetic_catalog(n_items)
    fresh = [it for it in data.items if is_fresh(it.item_id)]
    old = [it for it in data.items if not is_fresh(it.item_id)]
    return data, old, fresh


def train_base(data: Any, old: list[Any], out: Path, seed: int, threads: int) -> dict[str, Any]:
    """The ``ci`` profile on the old items and their training queries."""
    from tandem.ids import build_semantic_ids
    from tandem.training.config import id_config, profile_config
    from tandem.training.data import training_pairs
    from tandem.training.trainer import StagedTrainer

    config = profile_config("ci", seed=seed, threads=threads)
    id_map = build_semantic_ids(old, id_config("ci").model_copy(update={"seed": seed}))
    pairs, _ = training_pairs(data.train_queries, data.train_qrels, set(id_map.item_ids()), config.min_grade)
    return StagedTrainer(config, old, id_map, pairs, out, progress=False).run()


def dev_recall(retriever: Any, data: Any, fresh_ids: set[str]) -> dict[str, float]:
    """R@10 on dev queries whose relevant item is fresh, and on the rest."""
    from tandem.eval import evaluate, run_retriever

    out = {}
    for name, keep in (("fresh", True), ("old", False)):
        qrels = {q: r for q, r in data.dev_qrels.items() if (next(iter(r)) in fresh_ids) == keep}
        queries = {q: data.dev_queries[q] for q in qrels}
        run = run_retriever(retriever, queries, k=K, batch_size=32)
        out[name] = float(evaluate(run, qrels, [MEASURE]).metrics[MEASURE])
    return out


#: Settings every variant shares: 8 pseudo-queries per new item (4 per replayed old one).
COMMON: dict[str, float] = {"queries_per_item": 8}


def variants(quick: bool, ewc_lambda: float) -> list[tuple[str, dict[str, float]]]:
    """(name, overrides) of the adapter variants compared (on top of :data:`COMMON`)."""
    v = [("replay 50%", {"replay": 0.5}), ("no replay", {"replay": 0.0})]
    if not quick:
        v += [("replay 20%", {"replay": 0.2}),
              ("replay 50% + EWC", {"replay": 0.5, "ewc_lambda": ewc_lambda}),
              ("no replay + EWC", {"replay": 0.0, "ewc_lambda": ewc_lambda})]
    return v


def scale(n_new: int, epochs: int, threads: int, seed: int) -> dict[str, Any]:
    """Adapter training time for ``n_new`` new items at the ``ci`` model size (see module doc)."""
    import numpy as np

    from tandem.generative.artifacts import save_artifact
    from tandem.generative.idmap import id_space
    from tandem.generative.model import build_model
    from tandem.generative.tokenizer import train_tokenizer
    from tandem.ids import SemanticIdConfig, build_semantic_ids
    from tandem.training.adapter import AdapterConfig, train_adapter
    from tandem.training.config import profile_config
    from tandem_testing.synthetic_catalog import synthetic_catalog

    items = synthetic_catalog(n_new + 3000, train_per_item=1).items
    old, new = items[:3000], items[3000:]
    t0 = time.perf_counter()
    id_map = build_semantic_ids(old, SemanticIdConfig(levels=2, branching=32, leaf_capacity=32, reserved_per_leaf=8,
                                                     seed=seed))
    ci = profile_config("ci")
    tok = train_tokenizer([it.text() for it in old], ci.vocab_size, id_space(id_map, np.asarray(id_map.as_array())))
    import torch

    torch.manual_seed(seed)
    model = build_model(ci.size, tok, ci.max_input_length)
    with tempfile.TemporaryDirectory() as tmp:
        save_artifact(Path(tmp) / "base", model, tok, id_map, max_input_length=ci.max_input_length)
        setup_s = time.perf_counter() - t0
        default_epochs = AdapterConfig().epochs
        cfg = AdapterConfig(epochs=epochs, threads=threads, device="auto", seed=seed, eval_old_items=200)
        s = train_adapter(Path(tmp) / "base", new, old, Path(tmp) / "adapter", cfg)
    per_epoch = s["train_seconds"] / epochs
    return {"scale.new_items": len(new), "scale.old_items": len(old), "scale.device": s["device"],
            "scale.epochs_run": epochs, "scale.examples_per_epoch": s["epochs"][0]["examples"],
            "scale.seconds_per_epoch": round(per_epoch, 1), "scale.samples_per_s": s["samples_per_s"],
            "scale.check_seconds": s["check_seconds"], "scale.setup_seconds": round(setup_s, 1),
            "scale.projected_train_seconds_default_epochs": round(per_epoch * default_epochs, 1),
            "scale.default_epochs": default_epochs, "scale.trainable_parameters": s["parameters"]["trainable"]}


def split_recall(retriever: Any, splits: dict[str, Any], queries: Any) -> dict[str, float]:
    """``{split}_R@10`` and ``{split}_nDCG@10`` of ``retriever`` per qrels split (then closes it)."""
    from tandem.eval import evaluate, run_retriever

    out = {}
    for name, qrels in splits.items():
        run = run_retriever(retriever, {q: queries[q] for q in qrels}, k=K, batch_size=32)
        res = evaluate(run, qrels, [MEASURE, "nDCG@10"]).metrics
        out |= {f"{name}_R@10": round(float(res[MEASURE]), 4), f"{name}_nDCG@10": round(float(res["nDCG@10"]), 4)}
    retriever.close()
    return out


def homedepot(args: argparse.Namespace) -> dict[str, Any]:
    """Full-profile adapter check on Home Depot's fresh split (see the module doc)."""
    import torch

    from tandem.catalog.datasets import data_root, fresh_split_qrels, is_fresh, load_homedepot
    from tandem.generative import load_retriever
    from tandem.generative.tree_artifact import is_tree_folder
    from tandem.training.adapter import train_adapter
    from tandem.training.adapter_config import adapter_config

    torch.set_num_threads(args.threads)
    ds = load_homedepot(data_root("homedepot"))
    fresh = [it for it in ds.catalog.items if is_fresh(it.item_id)]
    old = [it for it in ds.catalog.items if not is_fresh(it.item_id)]
    fresh_ids = {it.item_id for it in fresh}
    splits = dict(zip(("fresh", "old"), fresh_split_qrels(ds.qrels["dev"], fresh_ids), strict=True))
    queries = ds.queries["dev"]

    def recall(retriever: Any) -> dict[str, float]:
        return split_recall(retriever, splits, queries)

    figures: dict[str, Any] = {"fresh_items": len(fresh), "old_items": len(old),
                               "fresh_dev_queries": len(splits["fresh"]), "old_dev_queries": len(splits["old"])}
    t0 = time.perf_counter()
    beams = 100 if is_tree_folder(args.hd_base) else K  # v2 decodes with its serving beam
    figures |= {f"base.{k}": v for k, v in recall(load_retriever(args.hd_base, num_beams=beams)).items()}
    figures["base.eval_seconds"] = round(time.perf_counter() - t0, 1)
    if is_tree_folder(args.hd_base):  # v2: fresh items findable right after ID assignment, before any training
        assigned = load_retriever(args.hd_base, num_beams=beams)
        t0 = time.perf_counter()
        assigned.add_items(fresh)  # type: ignore[attr-defined]
        figures["assign.seconds"] = round(time.perf_counter() - t0, 1)
        figures |= {f"assigned.{k}": v for k, v in recall(assigned).items()}
    overrides: dict[str, Any] = {"seed": args.seed, "threads": args.threads}
    if args.replay is not None:
        overrides["replay"] = args.replay
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.ewc:
        overrides["ewc_lambda"] = args.ewc
    for pair in args.set:  # any AdapterConfig field, as `tandem train adapter --set` takes it
        key, _, value = pair.partition("=")
        overrides[key] = value
    cfg = adapter_config(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.adapter_out or Path(tmp) / "adapter"
        t0 = time.perf_counter()
        s = train_adapter(args.hd_base, fresh, old, out, cfg)
        figures |= {"adapter.wall_seconds": round(time.perf_counter() - t0, 1), "adapter.train_seconds": s["train_seconds"],
                    "adapter.replay": s.get("replay", cfg.replay_share("t5")), "adapter.scope": s.get("scope"), "adapter.ewc_lambda": cfg.ewc_lambda, "adapter.epochs": s["epochs"],
                    "adapter.device": s["device"], "adapter.samples_per_s": s["samples_per_s"],
                    "adapter.trainable_parameters": s["parameters"]["trainable"],
                    "adapter.forgetting_exact_match": round(s["metrics"]["forgetting"], 4),
                    "adapter.metrics": s["metrics"]}
        after = recall(load_retriever(args.hd_base, adapter=out, num_beams=beams))
    figures |= {f"after.{k}": v for k, v in after.items()}
    figures["old_R@10_drop_points"] = round(100 * (figures["base.old_R@10"] - after["old_R@10"]), 2)
    return figures


def main() -> None:
    """Run the benchmark, print a table, write ``{"figures": {...}}``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="200 items, replay on/off only, 10 adapter epochs (about a minute)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    ap.add_argument("--items", type=int, default=None, help="catalog size (default 600, quick 200)")
    ap.add_argument("--base", type=Path, default=None, help="reuse this base model folder")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--ewc", type=float, default=None,
                    help="EWC λ of the EWC variants (default 1.0); with --hd-base: EWC on the one adapter")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--scale", type=int, default=0, help="time adapter training for this many new items instead")
    ap.add_argument("--scale-epochs", type=int, default=1, help="epochs actually run with --scale")
    ap.add_argument("--hd-base", type=Path, default=None,
                    help="Home Depot base trained without the fresh items: run the full-profile adapter check")
    ap.add_argument("--replay", type=float, default=None, help="--hd-base: replay share (default: the library's)")
    ap.add_argument("--epochs", type=int, default=None, help="--hd-base: adapter epochs (default: the library's)")
    ap.add_argument("--adapter-out", type=Path, default=None, help="--hd-base: keep the adapter in this folder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="--hd-base: an adapter setting, e.g. tree_scope=items (repeatable)")
    args = ap.parse_args()
    if args.hd_base is not None:
        figures = homedepot(args)
        args.out.write_text(json.dumps({"figures": figures}, indent=2))
        for k, v in figures.items():
            print(f"{k:40s} {v}")
        return
    if args.scale:
        figures = scale(args.scale, args.scale_epochs, args.threads, args.seed)
        args.out.write_text(json.dumps({"figures": figures}, indent=2))
        for k, v in figures.items():
            print(f"{k:50s} {v}")
        return

    import torch

    from tandem.generative.retriever import GenerativeRetriever
    from tandem.training.adapter import AdapterConfig, train_adapter

    torch.set_num_threads(args.threads)
    n_items = args.items or (200 if args.quick else 600)
    data, old, fresh = split(n_items)
    fresh_ids = {it.item_id for it in fresh}
    figures: dict[str, Any] = {"items": n_items, "fresh_items": len(fresh), "old_items": len(old)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.base
        if base is None:
            base = Path(tmp) / "base"
            t0 = time.perf_counter()
            summary = train_base(data, old, base, args.seed, args.threads)
            figures["base_train_seconds"] = round(time.perf_counter() - t0, 1)
            figures["base_exact_match"] = summary["final_memorisation"]["exact_match"]
        before = dev_recall(GenerativeRetriever(base, device="cpu", num_beams=K), data, fresh_ids)
        figures |= {"fresh_R@10_base": round(before["fresh"], 4), "old_R@10_base": round(before["old"], 4)}
        for name, overrides in variants(args.quick, 1.0 if args.ewc is None else args.ewc):
            extra = {"epochs": 10} if args.quick else {}
            cfg = AdapterConfig(seed=args.seed, threads=args.threads, device="cpu", **COMMON, **extra, **overrides)
            out = Path(tmp) / name.replace(" ", "_").replace("%", "").replace("+", "")
            s = train_adapter(base, fresh, old, out, cfg)
            after = dev_recall(GenerativeRetriever(base, adapter=out, device="cpu", num_beams=K), data, fresh_ids)
            key = name.replace(" ", "_").replace("%", "").replace("+", "").replace("__", "_")
            row = {"fresh_R@10": round(after["fresh"], 4), "old_R@10": round(after["old"], 4),
                   "old_R@10_drop": round(before["old"] - after["old"], 4),
                   "forgetting_exact_match": round(s["metrics"]["forgetting"], 4),
                   "train_seconds": s["train_seconds"], "fisher_seconds": s["fisher_seconds"],
                   "trainable_parameters": s["parameters"]["trainable"]}
            rows.append((name, row))
            figures |= {f"{key}.{k}": v for k, v in row.items()}
    args.out.write_text(json.dumps({"figures": figures}, indent=2))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hourly adapter, ci base on {len(old)} items, {len(fresh)} fresh items "
                        f"(dev R@10; base: fresh {before['fresh']:.3f}, old {before['old']:.3f})")
    for col in ("variant", "fresh R@10", "old R@10", "old drop", "forgetting (exact-match)", "train s",
                "Fisher s", "trainable params"):
        table.add_column(col, justify="right")
    for name, r in rows:
        table.add_row(name, f"{r['fresh_R@10']:.3f}", f"{r['old_R@10']:.3f}", f"{r['old_R@10_drop']:+.3f}",
                      f"{r['forgetting_exact_match']:+.3f}", f"{r['train_seconds']:.1f}",
                      f"{r['fisher_seconds']:.1f}", f"{r['trainable_parameters']:,}")
    Console(width=140).print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
