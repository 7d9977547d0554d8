"""Fault report: what is lost, doubled or failed when parts of Tandem fail, and how fast it recovers.

Six scenarios, each against real servers on loopback (the logic and the exact definition
of every column are in :mod:`tandem_testing.faults` and :mod:`tandem_testing.ingest_faults`):

* ``kafka_broker_restart`` — the Kafka broker stopped and started while events are
  published and ingested (store + Lucene index);
* ``consumer_sigkill`` — ``tandem stream consume`` SIGKILLed mid-batch and restarted;
* ``feedback_broker_restart`` / ``feedback_consumer_sigkill`` — the same two faults on the
  feedback path (``FeedbackService``'s sink → ``tandem.feedback`` → ``tandem stream feedback``
  → the store the canary reads; :mod:`tandem_testing.feedback_faults`);
* ``redis_restart`` — the Redis result cache restarted under search load;
* ``generative_killed`` — the generative RetrieverService process SIGKILLed under search
  load, restarted after an outage;
* ``corrupt_artifact`` — a promoted registry artifact damaged on disk, offered to a live
  service by a reload;
* ``slow_retriever`` — the generative service slower than the search deadline;
* ``poison_version``, ``oversized_dead_letter``, ``filter_flood``, ``topk_inflation`` and
  ``intent_down`` — issue 19: no record or request can stop the stream or burn the gateway
  (:mod:`tandem_testing.bounded_faults`).

``python -m bench.faults [--quick] --out FILE.json`` prints one table and writes
``{"figures": {"<scenario>": {"requests"|"events": n, "failures", "lost", "duplicated",
"recovery_s", ...}}, "config": {...}}``. ``--quick`` runs smaller loads; the two Kafka
scenarios still start (and restart) a broker, so it takes about a minute and a half on 2
cores. ``--only NAME`` runs one scenario.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

SCENARIOS = ["kafka_broker_restart", "consumer_sigkill", "redis_restart", "generative_killed",
             "corrupt_artifact", "slow_retriever", "poison_version", "oversized_dead_letter", "filter_flood",
             "topk_inflation", "intent_down", "feedback_broker_restart", "feedback_consumer_sigkill"]  # fmt: skip
KAFKA_SCENARIOS = {"consumer_sigkill", "poison_version", "oversized_dead_letter", "feedback_consumer_sigkill"}
"""Scenarios that share one broker started for them (kafka_broker_restart starts its own)."""


def run(quick: bool, only: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the chosen scenarios; returns (figures, config)."""
    from contextlib import ExitStack

    from tandem.jvm import ensure_jvm
    from tandem_testing import bounded_faults, faults, ingest_faults
    from tandem_testing.infra import KafkaBroker

    ensure_jvm()
    n_items = 100 if quick else 1000
    secs = 4.0 if quick else 20.0
    work = Path(tempfile.mkdtemp(prefix="tandem-bench-faults-"))
    figures: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    chosen = only or SCENARIOS
    stack = ExitStack()
    broker = stack.enter_context(KafkaBroker(data_dir=work / "kafka")) if KAFKA_SCENARIOS & set(chosen) else None
    with stack:
        for name in chosen:
            t0 = time.monotonic()
            d = work / name
            d.mkdir()
            r = _scenario(name, d, broker, quick, n_items, secs, faults, ingest_faults, bounded_faults)
            figures[name] = {k: v for k, v in r.figures().items() if k != "errors"}
            seconds[name] = round(time.monotonic() - t0, 1)
    return figures, {"quick": quick, "items": n_items, "load_s": secs, "scenario_wall_s": seconds}


def _scenario(name: str, d: Path, broker: Any, quick: bool, n_items: int, secs: float, faults: Any,
              ingest_faults: Any, bounded_faults: Any) -> Any:
    """Run one scenario; returns its :class:`~tandem_testing.faults.ScenarioResult`."""
    if name == "kafka_broker_restart":
        return ingest_faults.kafka_broker_restart(d, n_items=n_items, publish_s=3.0 if quick else 15.0)
    if name == "consumer_sigkill":
        return ingest_faults.consumer_sigkill(d, broker.bootstrap, n_items=n_items)
    if name.startswith("feedback_"):
        from tandem_testing import feedback_faults

        if name == "feedback_broker_restart":
            return feedback_faults.feedback_broker_restart(d, n_requests=n_items, publish_s=2.0 if quick else 15.0)
        return feedback_faults.feedback_consumer_sigkill(d, broker.bootstrap, n_requests=n_items)
    if name in ("poison_version", "oversized_dead_letter"):
        return getattr(bounded_faults, name)(d, broker.bootstrap, n_items=n_items)
    if name in ("filter_flood", "topk_inflation", "intent_down"):
        return getattr(bounded_faults, name)(seconds=secs)
    if name == "redis_restart":
        return faults.redis_restart(seconds=secs)
    if name == "generative_killed":
        return faults.generative_killed(d, seconds=secs + 2, outage_s=1.5 if quick else 5.0)
    if name == "corrupt_artifact":
        return faults.corrupt_artifact(d, seconds=secs)
    return faults.slow_retriever(seconds=secs, deadline_s=0.3, slow_s=1.0)


def main() -> None:
    """Parse arguments, run, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller loads (about 1.5 minutes)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON figures")
    parser.add_argument("--only", action="append", choices=SCENARIOS, default=[], help="run only this scenario")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # reconnect noise while the broker is down
    figures, config = run(args.quick, args.only)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench.faults ({'quick' if args.quick else 'full'})")
    for col in ("scenario", "requests or events", "failures", "lost", "duplicated", "recovery (s)", "notes"):
        table.add_column(col, justify="left" if col in ("scenario", "notes") else "right")
    core = {"requests", "events", "failures", "lost", "duplicated", "recovery_s"}
    for name, f in figures.items():
        unit = "requests" if "requests" in f else "events"
        notes = ", ".join(f"{k}={v}" for k, v in f.items() if k not in core)
        rec = "-" if f["recovery_s"] is None else f"{f['recovery_s']:.2f}"
        table.add_row(name, f"{f[unit]} {unit}", str(f["failures"]), str(f["lost"]), str(f["duplicated"]), rec, notes)
    Console(width=200).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"figures": figures, "config": config}, indent=2) + "\n")


if __name__ == "__main__":
    main()
