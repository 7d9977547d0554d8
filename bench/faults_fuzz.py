"""Fuzz report of the ingest write path (issue 19, "no poison pill"): the properties of
:mod:`tandem_testing.fuzz_ingest` over 10,000+ generated cases per target.

``python -m bench.faults_fuzz [--quick] --out FILE.json`` runs ``store_apply``
(:meth:`CatalogStore.apply` on batches with unvalidated events) and ``consumer_record`` (the
consumer's decode → apply → dead-letter → commit path on fuzzed Kafka records), each applied
twice (the replay after a crash), counting outcomes instead of stopping at the first failure.
Writes ``{"figures": {"cases", "crashes", "stalls", "contract_violations", "<target>": {...}}}``;
``--quick`` runs 1/20 of the cases.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from bench.fuzz import Tally, _fuzz

FULL = {"store_apply": 10_000, "consumer_record": 10_000}


def run(scale: float, seed: int) -> dict[str, Tally]:
    """Run both targets; returns their tallies."""
    from tandem.streams.store import CatalogStore
    from tandem_testing import fuzz_ingest

    tallies = {name: Tally() for name in FULL}

    def store_apply(batch: Any) -> None:
        with CatalogStore(":memory:") as store:
            tallies["store_apply"].run(fuzz_ingest.check_store_apply, store, batch)
            tallies["store_apply"].run(fuzz_ingest.check_store_apply, store, batch)

    def consumer_record(records: Any) -> None:
        with CatalogStore(":memory:") as store:
            consumer = fuzz_ingest.consumer_for(store)
            tallies["consumer_record"].run(fuzz_ingest.check_consumer_records, consumer, records)
            tallies["consumer_record"].run(fuzz_ingest.check_consumer_records, consumer, records)

    for name, strategy, body in (("store_apply", fuzz_ingest.event_batches(), store_apply),
                                 ("consumer_record", fuzz_ingest.record_batches(), consumer_record)):
        t0 = time.perf_counter()
        _fuzz(strategy, max(1, int(FULL[name] * scale) // 2), seed, body)  # each example runs twice
        tallies[name].seconds = time.perf_counter() - t0
    return tallies


def main() -> None:
    """Parse arguments, run, print a summary, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/20 of the cases")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # every dead letter is logged as a warning
    tallies = run(1 / 20 if args.quick else 1.0, args.seed)
    per = {name: t.figures() for name, t in tallies.items()}
    figures = {"cases": sum(t.cases for t in tallies.values()),
               "crashes": sum(f["crashes"] for f in per.values()),
               "stalls": sum(t.failures["stall"] for t in tallies.values()),
               "contract_violations": sum(f["contract_violations"] for f in per.values()), **per}
    for name, f in per.items():
        print(f"{name}: {f['cases']} cases, {f['crashes']} crashes, {f['contract_violations']} contract violations, "
              f"{f['seconds']} s, outcomes {f['outcomes']}")
    print(f"total {figures['cases']} cases, {figures['crashes']} crashes, {figures['stalls']} stalls")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"figures": figures, "config": {"seed": args.seed, "quick": args.quick}},
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
