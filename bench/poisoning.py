"""Document-poisoning benchmark: how far keyword stuffing lifts an item for the queries it
targets, with and without the ingest defences (:mod:`tandem.streams.poisoning`).

Data: the first ``--items`` Home Depot products (real titles) and real train/dev queries
whose judged-relevant products are in that slice, so every targeted query has genuine
competition. For each of ``--targets`` queries, an unrelated product (not judged for it) is
copied under a new id and stuffed for that query in one of three ways (cycled):

* ``repetition`` — the query appended to the title five times;
* ``hidden_list`` — a short sentence plus a description that is a keyword list: the query's
  terms among the terms of other popular queries (the seed chapter's "[hidden keywords]");
* ``appended`` — the query appended to the title once: subtle stuffing that no lexical rule
  can tell from an honest title, included to show the limit of the defence.

Each corpus (clean slice + stuffed copies) is indexed with real Lucene BM25 under three
ingest settings — ``none`` (raw text), ``caps`` (per-field term cap 3 on every item, no
detector), ``flag`` (detector + neutralised copies of flagged items) — and the
``quarantine`` (default) / ``dlq`` actions are computed from the ``caps`` index by removing
the flagged copies (they are never indexed). Reported per stuffing kind and setting: median rank of the
stuffed copy for its targeted query (1,001 = not in the top 1,000; ``original`` = the same
product before stuffing, i.e. what stuffing gains) and the share of targeted
queries where it reaches the top 10; and the detector's precision and recall on stuffed vs
clean items of the corpus, plus its false-positive rate on all 54,667 clean Home Depot
titles.

``python -m bench.poisoning [--quick] --out FILE.json`` prints a table and writes
``{"figures": {...}, "config": {...}}``. ``--quick``: 3,000 items, 60 targets.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

KINDS = ("repetition", "hidden_list", "appended")
NOT_FOUND = 1001


def _load(n_items: int) -> tuple[list[Any], dict[str, str], dict[str, dict[str, int]]]:
    from tandem.catalog.datasets import data_root
    from tandem.catalog.item import Item
    from tandem.catalog.queries import read_qrels, read_queries

    root = data_root("homedepot")
    items = []
    with (root / "products.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            items.append(Item.model_validate_json(line))
            if len(items) == n_items:
                break
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for split in ("train", "dev"):
        queries.update(read_queries(root / f"queries.{split}.tsv"))
        for qid, judged in read_qrels(root / f"qrels.{split}.txt").items():
            qrels.setdefault(qid, {}).update(judged)
    return items, queries, qrels


def _stuff(item: Any, query: str, kind: str, n: int, vocabulary: list[str], rng: random.Random) -> Any:
    """A stuffed copy of ``item`` (new id) aimed at ``query``."""
    update: dict[str, Any] = {"item_id": f"stuffed-{n}"}
    if kind == "repetition":
        update["title"] = f"{item.title} " + " ".join([query] * 5)
    elif kind == "appended":
        update["title"] = f"{item.title} {query}"
    else:
        words = query.lower().split() + rng.sample(vocabulary, 14)
        rng.shuffle(words)
        update["description"] = f"Quality you can count on for every project. {' '.join(words)}"
    return item.model_copy(update=update)


def _ranks(index_dir: Path, targets: list[tuple[str, str]], k: int = 1000) -> dict[str, int]:
    """Rank of each stuffed id for its query (``NOT_FOUND`` when outside the top ``k``)."""
    from tandem.sparse import SparseRetriever

    with SparseRetriever(index_dir, writable=False) as bm25:
        results = bm25.retrieve([q for q, _ in targets], k)
    out = {}
    for (_, sid), hits in zip(targets, results, strict=True):
        ids = [h.item_id for h in hits]
        out[sid] = ids.index(sid) + 1 if sid in ids else NOT_FOUND
    return out


def run(n_items: int, n_targets: int, seed: int = 7) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build the corpora, index them, measure; returns (figures, config)."""
    from tandem.jvm import ensure_jvm
    from tandem.sparse.documents import cap_item
    from tandem.streams.poisoning import PoisoningDetector, PoisoningPolicy, is_content, tokens

    ensure_jvm()
    from tandem.sparse import build_index

    rng = random.Random(seed)
    items, queries, qrels = _load(n_items)
    in_slice = {i.item_id for i in items}
    candidates = sorted(qid for qid, judged in qrels.items() if qid in queries and len(queries[qid].split()) >= 2
                        and any(d in in_slice for d in judged))
    chosen = rng.sample(candidates, min(n_targets, len(candidates)))
    # Terms of popular queries: what a stuffer lists to be found for many searches.
    vocabulary = [t for t, _ in Counter(t for q in queries.values() for t in tokens(q) if is_content(t)).most_common(400)]
    stuffed, targets, kind_of, originals = [], [], {}, []
    for n, qid in enumerate(chosen):
        query = queries[qid]
        victim = rng.choice([i for i in items[:2000] if i.item_id not in qrels[qid]])
        kind = KINDS[n % len(KINDS)]
        s = _stuff(victim, query, kind, n, vocabulary, rng)
        stuffed.append(s)
        targets.append((query, s.item_id))
        originals.append((query, victim.item_id))
        kind_of[s.item_id] = kind

    detector = PoisoningDetector(PoisoningPolicy(action="flag"))
    verdicts = {i.item_id: detector.inspect(i) for i in [*items, *stuffed]}
    work = Path(tempfile.mkdtemp(prefix="tandem-bench-poisoning-"))
    corpora = {
        "none": [*items, *stuffed],
        "caps": [cap_item(i, 3) for i in [*items, *stuffed]],
        "flag": [detector.neutralise(i, verdicts[i.item_id]) if verdicts[i.item_id].flagged else cap_item(i, 3)
                 for i in [*items, *stuffed]],
    }
    ranks = {}
    for name, corpus in corpora.items():
        build_index(corpus, work / name)
        ranks[name] = _ranks(work / name, targets)
    # Where the same product ranked for the query before it was stuffed: the lift stuffing buys.
    before = _ranks(work / "none", originals)
    ranks["original"] = {sid: before[vid] for (_, sid), (_, vid) in zip(targets, originals, strict=True)}
    ranks["quarantine"] = {sid: NOT_FOUND if verdicts[sid].flagged else r for sid, r in ranks["caps"].items()}

    figures: dict[str, Any] = {}
    for kind in KINDS:
        ids = [sid for _, sid in targets if kind_of[sid] == kind]
        for setting in ("original", "none", "caps", "flag", "quarantine"):
            rs = [ranks[setting][sid] for sid in ids]
            figures[f"{kind}.{setting}.median_rank"] = statistics.median(rs) if rs else None
            figures[f"{kind}.{setting}.top10_share"] = round(sum(r <= 10 for r in rs) / len(rs), 3) if rs else None
        figures[f"{kind}.recall"] = round(sum(verdicts[s].flagged for s in ids) / len(ids), 3) if ids else None

    flagged_stuffed = sum(verdicts[s.item_id].flagged for s in stuffed)
    flagged_clean = sum(verdicts[i.item_id].flagged for i in items)
    blatant = [s for s in stuffed if kind_of[s.item_id] != "appended"]
    figures["detector.precision"] = round(flagged_stuffed / max(1, flagged_stuffed + flagged_clean), 3)
    figures["detector.recall_all"] = round(flagged_stuffed / len(stuffed), 3)
    figures["detector.recall_blatant"] = round(sum(verdicts[s.item_id].flagged for s in blatant) / len(blatant), 3)
    figures["detector.false_positives_slice"] = flagged_clean
    figures["detector.fp_rate_full_catalog"] = _full_catalog_fp_rate(detector)
    rules = Counter(r for s in stuffed for r in verdicts[s.item_id].rules)
    config = {"items": len(items), "targets": len(targets), "seed": seed, "term_cap": 3,
              "rules_fired_on_stuffed": dict(rules), "not_found_rank": NOT_FOUND}
    return figures, config


def _full_catalog_fp_rate(detector: Any) -> float:
    """Share of all Home Depot products (all assumed clean) the detector flags."""
    from tandem.catalog.datasets import data_root
    from tandem.catalog.item import Item

    n = flagged = 0
    with (data_root("homedepot") / "products.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            n += 1
            flagged += detector.inspect(Item.model_validate_json(line)).flagged
    return round(flagged / n, 6)


def main() -> None:
    """Parse arguments, run, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 items, 60 targeted queries")
    parser.add_argument("--items", type=int, default=None, help="catalog slice (default 20,000)")
    parser.add_argument("--targets", type=int, default=None, help="targeted queries (default 300)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON figures")
    args = parser.parse_args()
    n_items = args.items or (3000 if args.quick else 20_000)
    n_targets = args.targets or (60 if args.quick else 300)
    figures, config = run(n_items, n_targets)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench.poisoning ({config['items']} items, {config['targets']} targeted queries; "
                        f"rank of the stuffed copy for its query)")
    table.add_column("stuffing")
    for setting in ("unstuffed original", "none", "caps", "flag", "quarantine (default) / dlq"):
        table.add_column(f"{setting}\nmedian rank / top-10", justify="right")
    table.add_column("detector recall", justify="right")
    for kind in KINDS:
        cells = [f"{figures[f'{kind}.{s}.median_rank']} / {figures[f'{kind}.{s}.top10_share']:.0%}"
                 for s in ("original", "none", "caps", "flag", "quarantine")]
        table.add_row(kind, *cells, f"{figures[f'{kind}.recall']:.0%}")
    console = Console(width=190)
    console.print(table)
    console.print(f"detector: precision {figures['detector.precision']:.3f}, recall {figures['detector.recall_all']:.3f} "
                  f"(blatant kinds {figures['detector.recall_blatant']:.3f}); false positives: "
                  f"{figures['detector.false_positives_slice']} in the slice, "
                  f"{figures['detector.fp_rate_full_catalog']:.4%} of all Home Depot titles")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"figures": figures, "config": config}, indent=2) + "\n")


if __name__ == "__main__":
    main()
