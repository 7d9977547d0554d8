"""Fuzzing report: the properties of :mod:`tandem_testing.fuzz` over 100,000+ generated cases.

``python -m bench.fuzz [--quick] --out FILE.json`` runs each target (request validation,
proto conversion, event records, event-file lines, JSONL and CSV catalog files, and search
requests against a real gateway on loopback) for a fixed number of Hypothesis examples,
counting outcomes instead of stopping at the first failure, then replays the known
reproducers of bugs this fuzzing found. Prints a table and writes ``{"figures": {...}}``
with ``cases``, ``crashes``, ``internal_errors``, ``contract_violations`` and one entry per
target. ``--quick`` runs 1/25 of the cases (well under a minute on 2 cores). The targets live in
:mod:`tandem_testing.fuzz_requests`, :mod:`tandem_testing.fuzz_events` and
:mod:`tandem_testing.fuzz_loaders`.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Generated cases per target in the full run (106,000 in all).
FULL = {"search_request": 40_000, "proto_request": 25_000, "event_record": 15_000, "event_line": 15_000,
        "jsonl_file": 4_000, "csv_file": 4_000, "grpc_search": 3_000}

#: Reproducers of the bugs fuzzing found (see tests/unit/test_fuzz_events.py / _loaders.py).
SEEDS: list[tuple[str, str, Any]] = [
    ("event_record", "huge integer", (b"t01", b"1" * 5000)),
    ("event_record", "deep nesting", (b"t01", b"[" * 100_000)),
    ("event_line", "huge integer", ('{"item_id": "t01", "title": "x", "version": ' + "9" * 5000 + "}",)),
    ("jsonl_file", "non-UTF-8 row", b'{"item_id": "a", "title": "x"}\n\xff\xfe\n'),
    ("jsonl_file", "huge integer", b'{"item_id": "a", "title": "x"}\n' + b"1" * 5000 + b"\n"),
    ("jsonl_file", "deep nesting", b'{"item_id": "a", "title": "x"}\n' + b"[" * 100_000 + b"\n"),
    ("csv_file", "cell over the csv field limit", b"item_id,title\na,x\nb," + b"x" * 200_000 + b"\n"),
]


class Tally:
    """Outcome counts of one target, plus the first few failures verbatim."""

    def __init__(self) -> None:
        self.cases = 0
        self.outcomes: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.examples: list[str] = []
        self.seconds = 0.0

    def run(self, check: Callable[..., str], *args: Any) -> None:
        """One case: count the outcome label or the kind of failure."""
        from tandem_testing.fuzz import FuzzFailure

        self.cases += 1
        try:
            self.outcomes[check(*args)] += 1
        except FuzzFailure as exc:
            self.failures[exc.kind] += 1
            if len(self.examples) < 3:
                self.examples.append(str(exc)[:400])

    def figures(self) -> dict[str, Any]:
        """This target's JSON entry."""
        return {"cases": self.cases, "crashes": self.failures["crash"], "internal_errors": self.failures["internal"],
                "contract_violations": self.failures["contract"], "outcomes": dict(self.outcomes),
                "seconds": round(self.seconds, 2), "first_failures": self.examples}


def _fuzz(strategy: Any, n: int, seed: int, body: Callable[[Any], None]) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    # Generate only: failures are counted by Tally, so there is nothing to shrink or replay.
    @hseed(seed)
    @settings(max_examples=n, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(value: Any) -> None:
        body(value)

    run()


def run_targets(scale: float, seed: int, workdir: Path) -> dict[str, Tally]:
    """Every target with ``FULL[target] * scale`` examples."""
    from tandem_testing import fuzz_events, fuzz_loaders, fuzz_requests

    tallies = {name: Tally() for name in FULL}
    n = {name: max(1, int(count * scale)) for name, count in FULL.items()}
    plan: list[tuple[str, Any, Callable[[Tally, Any], None]]] = [
        ("search_request", fuzz_requests.search_requests(), lambda t, v: t.run(fuzz_requests.check_search_request, v)),
        ("proto_request", fuzz_requests.proto_search_requests(),
         lambda t, v: t.run(fuzz_requests.check_proto_request, v)),
        ("event_record", fuzz_events.event_records(), lambda t, v: t.run(fuzz_events.check_event_record, *v)),
        ("event_line", fuzz_events.event_lines(), lambda t, v: t.run(fuzz_events.check_event_line, v)),
        ("jsonl_file", _with_strict(fuzz_loaders.catalog_rows()),
         lambda t, v: t.run(fuzz_loaders.check_jsonl_file, workdir, v[0], v[1])),
        ("csv_file", _with_strict(fuzz_loaders.csv_files()),
         lambda t, v: t.run(fuzz_loaders.check_csv_file, workdir, *v[0], v[1])),
    ]
    for name, strategy, body in plan:
        started = time.perf_counter()
        _fuzz(strategy, n[name], seed, lambda v, t=tallies[name], b=body: b(t, v))
        tallies[name].seconds = time.perf_counter() - started
    started = time.perf_counter()
    with fuzz_requests.fuzz_server() as stub:
        t = tallies["grpc_search"]
        _fuzz(fuzz_requests.proto_search_requests(), n["grpc_search"], seed,
              lambda v: t.run(fuzz_requests.check_grpc_search, stub, v))
    tallies["grpc_search"].seconds = time.perf_counter() - started
    return tallies


def _with_strict(strategy: Any) -> Any:
    from hypothesis import strategies as st

    return st.tuples(strategy, st.booleans())


def run_seeds(workdir: Path) -> list[dict[str, Any]]:
    """Replay each known reproducer through its target's property."""
    from tandem.catalog.loaders import load_items
    from tandem.errors import InvalidInput
    from tandem_testing import fuzz, fuzz_events

    out = []
    for target, what, value in SEEDS:
        status = "ok"
        try:
            if target == "event_record":
                fuzz_events.check_event_record(*value)
            elif target == "event_line":
                fuzz_events.check_event_line(*value)
            else:
                path = workdir / ("seed.csv" if target == "csv_file" else "seed.jsonl")
                path.write_bytes(value)
                try:
                    load_items(path)
                except InvalidInput:
                    pass  # refusing the whole file cleanly is within the contract
                except Exception as exc:
                    raise fuzz.FuzzFailure(f"load_items: {type(exc).__name__}", "crash") from exc
        except fuzz.FuzzFailure as exc:
            status = f"{exc.kind}: {str(exc)[:100]}"
        out.append({"target": target, "input": what, "result": status})
    return out


def main() -> None:
    """Run the report, print a table, write ``{"figures": {...}}``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="1/25 of the cases")
    ap.add_argument("--seed", type=int, default=12, help="Hypothesis seed (the run is reproducible)")
    ap.add_argument("--out", required=True, help="JSON file for the figures")
    args = ap.parse_args()
    logging.getLogger("tandem").setLevel(logging.ERROR)  # loaders warn once per file with skips

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tandem-fuzz-") as tmp:
        tallies = run_targets(1 / 25 if args.quick else 1.0, args.seed, Path(tmp))
        seeds = run_seeds(Path(tmp))
    per_target = {name: t.figures() for name, t in tallies.items()}
    generated = {k: sum(t[k] for t in per_target.values()) for k in ("cases", "crashes", "internal_errors",
                                                                        "contract_violations")}
    seed_crashes = sum(1 for s in seeds if s["result"].startswith("crash"))
    figures = {**generated, "seconds": round(time.perf_counter() - started, 1), "quick": args.quick,
               "seed": args.seed, "targets": per_target, "known_bug_reproducers": seeds,
               "known_bug_reproducers_crashing": seed_crashes}

    Path(args.out).write_text(json.dumps({"figures": figures}, indent=2))
    print(f"{'target':<16} {'cases':>8} {'crashes':>8} {'internal':>9} {'contract':>9} {'s':>7}  outcomes")
    for name, t in per_target.items():
        top = ", ".join(f"{k}={v}" for k, v in sorted(t["outcomes"].items(), key=lambda kv: -kv[1])[:4])
        print(f"{name:<16} {t['cases']:>8} {t['crashes']:>8} {t['internal_errors']:>9} "
              f"{t['contract_violations']:>9} {t['seconds']:>7}  {top}")
    print(f"{'total':<16} {generated['cases']:>8} {generated['crashes']:>8} {generated['internal_errors']:>9} "
          f"{generated['contract_violations']:>9} {figures['seconds']:>7}")
    print(f"known-bug reproducers still crashing: {seed_crashes} of {len(seeds)}")
    for s in seeds:
        print(f"  {s['target']:<13} {s['input']:<30} {s['result'][:90]}")


if __name__ == "__main__":
    main()
