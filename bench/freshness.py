"""Freshness benchmark: publish → "found by BM25 search" latency, and ingest throughput.

Deployment measured: a real Kafka broker (KRaft, single node: a private one on loopback, or
``TANDEM_KAFKA_BOOTSTRAP``), the real ingest consumer (:class:`tandem.streams.consumer.
IngestConsumer`: SQLite catalog store + live Lucene index, commit after apply) in a thread
of this process, and a separate read-only BM25 searcher on the same index that picks up new
commits with ``refresh()`` — as a serving replica would.

Phases (synthetic catalog, ``tandem_testing.stream_catalog``; every item has a unique model code):

1. warm-up: a few items create the index (JVM start and the first build are not measured);
2. throughput: ``--events`` upserts published at once; ``events_per_s`` = events / (first
   send → last event applied to store + index); ``apply_events_per_s`` counts only the
   consumer's apply time (store transaction + Lucene commit);
3. freshness: 200 new items published one by one at ``--rate`` per second while a searcher
   thread queries their model codes; latency = time the item is the top hit of its own
   model code − time just before its send. p50/p99 over the 200.

``python -m bench.freshness [--quick] --out FILE.json`` prints a table and writes
``{"figures": {...}, "config": {...}}``. ``--quick`` uses 2,000 throughput events (well
under a minute on 2 cores, broker start included).

``--topology chart`` measures the deployed shape instead (:mod:`bench.freshness_chart`): the
Helm chart's ingest, sparse, generative and gateway pods as separate processes, publish →
found through the gateway (``--chart DIR`` for another copy of the chart).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

FRESH_ITEMS = 200


def _percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def _wait(check: Any, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(0.01)


def run(quick: bool, events: int | None, rate: float) -> tuple[dict[str, float], dict[str, Any]]:
    """Run the three phases; returns (figures, config)."""
    from kafka import KafkaAdminClient

    from tandem.catalog.events import ItemEvent
    from tandem.jvm import ensure_jvm
    from tandem.streams.apply import Applier, LazyBM25Index
    from tandem.streams.config import StreamSettings
    from tandem.streams.consumer import IngestConsumer
    from tandem.streams.producer import EventProducer
    from tandem.streams.store import CatalogStore
    from tandem_testing.stream_catalog import synthetic_items
    from tandem_testing.infra import KafkaBroker

    n_events = events or (2_000 if quick else 20_000)
    ensure_jvm()
    broker = None
    bootstrap = os.environ.get("TANDEM_KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = KafkaBroker().start()
        bootstrap = broker.bootstrap
    work = Path(tempfile.mkdtemp(prefix="tandem-bench-freshness-"))
    topic = f"bench.items.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": 3, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    settings = StreamSettings(kafka_bootstrap=bootstrap, items_topic=topic, dlq_topic=topic + ".dlq")
    store = CatalogStore(work / "catalog.sqlite")
    index = LazyBM25Index(work / "bm25")
    applier = Applier(store, index)
    consumer = IngestConsumer(applier, settings, group=f"bench-{topic}", max_batch=500)
    batches: list[tuple[float, int, float]] = []  # (applied at, events, apply seconds)
    consumer_thread = threading.Thread(
        target=consumer.run, kwargs={"on_batch": lambda r: batches.append((time.perf_counter(), r.events, r.seconds))},
        name="ingest", daemon=True,
    )  # fmt: skip
    producer = EventProducer(settings)
    # The consumer thread owns `store`'s connection; progress is read on a second one.
    probe = CatalogStore(work / "catalog.sqlite")
    try:
        consumer_thread.start()
        warm = synthetic_items(20, start=10_000_000)
        producer.publish([ItemEvent.upsert(i) for i in warm])
        _wait(lambda: probe.index_seq >= len(warm), "warm-up indexing", 180)

        # Throughput: everything published at once; the consumer drains it in batches.
        base_seq = probe.index_seq
        items = synthetic_items(n_events, start=0)
        t0 = time.perf_counter()
        apply_s0 = consumer.totals.seconds
        producer.publish([ItemEvent.upsert(i) for i in items], wait=False)
        producer.flush()
        _wait(lambda: probe.index_seq >= base_seq + n_events, "throughput ingest", 900)
        ingest_s = time.perf_counter() - t0
        apply_s = consumer.totals.seconds - apply_s0

        # Freshness: one send at a time at `rate`/s; a reader polls for each item.
        from tandem.sparse import SparseRetriever

        reader = SparseRetriever(index.index_dir, writable=False)
        fresh = synthetic_items(FRESH_ITEMS, start=5_000_000)
        sent: dict[str, float] = {}
        found: dict[str, float] = {}
        lock = threading.Lock()
        done = threading.Event()

        def search_loop() -> None:
            while not done.is_set():
                with lock:
                    pending = [i for i in fresh if i.item_id in sent and i.item_id not in found]
                # A short pause between rounds: each refresh opens a Lucene reader, and the
                # reader shares the JVM (and its lock) with the consumer's writer.
                time.sleep(0.02)
                if not pending:
                    continue
                reader.refresh()
                hits = reader.retrieve([i.attributes["model"] for i in pending], 1)
                now = time.perf_counter()
                with lock:
                    for item, h in zip(pending, hits):
                        if h and h[0].item_id == item.item_id:
                            found[item.item_id] = now
                if len(found) == len(fresh):
                    return

        fresh_t0 = time.perf_counter()
        searcher = threading.Thread(target=search_loop, name="search", daemon=True)
        searcher.start()
        for item in fresh:
            key = item.item_id
            with lock:
                sent[key] = time.perf_counter()
            producer.publish([ItemEvent.upsert(item)], wait=False)
            producer.flush()
            time.sleep(1.0 / rate)
        searcher.join(timeout=120)
        done.set()
        reader.close()
        missing = [i.item_id for i in fresh if i.item_id not in found]
        if missing:
            raise RuntimeError(f"{len(missing)} fresh items never became searchable, e.g. {missing[:3]}")
        lat = [found[k] - sent[k] for k in sent]
        fresh_batches = [(n, sec) for t, n, sec in batches if t >= fresh_t0]
        figures = {
            "publish_to_search_p50_s": round(statistics.median(lat), 4),
            "publish_to_search_p99_s": round(_percentile(lat, 99), 4),
            "publish_to_search_max_s": round(max(lat), 4),
            "events_per_s": round(n_events / ingest_s, 1),
            "apply_events_per_s": round(n_events / apply_s, 1) if apply_s > 0 else 0.0,
            # Where freshness goes: the consumer's apply (store + Lucene commit) per batch.
            "fresh_apply_batch_p50_s": round(statistics.median(sec for _, sec in fresh_batches), 4),
            "fresh_events_per_batch_mean": round(statistics.mean(n for n, _ in fresh_batches), 2),
        }
        config = {
            "quick": quick, "throughput_events": n_events, "fresh_items": FRESH_ITEMS, "publish_rate_per_s": rate,
            "partitions": 3, "max_batch": 500, "broker": "private KRaft" if broker else bootstrap,
            "store_items": probe.counts()["items"], "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }  # fmt: skip
        return figures, config
    finally:
        consumer.stop()
        consumer_thread.join(timeout=60)
        producer.close()
        index.close()
        probe.close()
        store.close()
        if broker is not None:
            broker.close()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    """CLI entry: parse arguments, run, print the table, write ``--out``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 throughput events (under a minute)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON figures")
    parser.add_argument("--events", type=int, default=None, help="throughput events (default 2,000 / 20,000)")
    parser.add_argument("--rate", type=float, default=20.0, help="fresh items published per second")
    parser.add_argument("--topology", choices=["inprocess", "chart"], default="inprocess",
                        help="inprocess: consumer + reader in this process; chart: the Helm chart's pods")
    parser.add_argument("--chart", type=Path, default=None, help="with --topology chart: chart folder to render")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.topology == "chart":
        from bench.freshness_chart import run_chart

        figures, config = run_chart(args.quick, args.chart)
        title = f"bench.freshness --topology chart ({config['fresh_items']} fresh items, {config['deletes']} deletes)"
    else:
        figures, config = run(args.quick, args.events, args.rate)
        title = (f"bench.freshness ({'quick' if args.quick else 'full'}; {config['throughput_events']} "
                 f"events, {config['fresh_items']} fresh items)")

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in figures.items():
        table.add_row(k, f"{v:g}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"figures": figures, "config": config}, indent=2) + "\n")


if __name__ == "__main__":
    main()
