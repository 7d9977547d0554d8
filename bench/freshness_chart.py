"""Freshness of the chart's topology: publish → found through the gateway, across processes.

``bench.freshness --topology chart`` runs this: the ingest, sparse, generative and gateway pods
of ``helm template charts/tandem`` as local processes (:class:`tandem_testing.chart_topology.
ChartTopology`; the same launcher as ``tests/integration/test_chart_topology.py``), a real Kafka
and Redis (private ones on loopback, or ``TANDEM_KAFKA_BOOTSTRAP`` / ``TANDEM_REDIS_URL``).

Measured, one event in flight at a time, each published after a random pause (0–0.5 s, so
no event lines up with the servers' poll loops):

* ``publish_to_search_*``: new items (unique model codes); time from just before the send
  until the gateway returns the item for its model code, through its cache, as a client sees it;
* ``delete_to_gone_bm25_*``: deletes of seed items; time until the gateway's answer no longer
  carries a BM25 hit for it (the served index has the tombstone).

``--chart DIR`` measures another copy of the chart (e.g. an older commit's).
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

SEED_ITEMS = 30


def _percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))]


def run_chart(quick: bool, chart: Path | None = None, fresh_items: int | None = None,
              timeout_s: float = 30.0) -> tuple[dict[str, float], dict[str, Any]]:
    """Start the topology, publish and measure; returns (figures, config)."""
    from tandem.catalog.events import ItemEvent
    from tandem_testing.stream_catalog import synthetic_items
    from tandem_testing.chart_pods import CHART
    from tandem_testing.chart_topology import ChartTopology
    from tandem_testing.infra import KafkaBroker, RedisServer

    n_fresh = fresh_items or (40 if quick else 200)
    n_deletes = 5 if quick else 20
    rng = random.Random(19)
    work = Path(tempfile.mkdtemp(prefix="tandem-bench-chart-"))
    with ExitStack() as stack:
        bootstrap = os.environ.get("TANDEM_KAFKA_BOOTSTRAP") or stack.enter_context(KafkaBroker()).bootstrap
        redis_url = os.environ.get("TANDEM_REDIS_URL") or stack.enter_context(RedisServer()).url
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        seed = synthetic_items(SEED_ITEMS, start=0)
        t_start = time.perf_counter()
        topo = stack.enter_context(ChartTopology(bootstrap, work, seed, redis_url=redis_url, chart=chart or CHART))
        start_s = time.perf_counter() - t_start

        found: list[float] = []
        for item in synthetic_items(n_fresh, start=5_000_000):
            time.sleep(rng.uniform(0, 0.5))
            t0 = time.perf_counter()
            topo.publish([ItemEvent.upsert(item)])
            found.append(topo.wait_until(item.attributes["model"], item.item_id, present=True, since=t0,
                                         timeout_s=timeout_s))
        gone: list[float] = []
        for item in seed[:n_deletes]:
            time.sleep(rng.uniform(0, 0.5))
            t0 = time.perf_counter()
            topo.publish([ItemEvent.delete(item.item_id, version=item.version + 1)])
            gone.append(topo.wait_until(item.attributes["model"], item.item_id, present=False, source="bm25",
                                        since=t0, timeout_s=timeout_s))
        figures = {
            "publish_to_search_p50_s": round(statistics.median(found), 4),
            "publish_to_search_p99_s": round(_percentile(found, 99), 4),
            "publish_to_search_max_s": round(max(found), 4),
            "delete_to_gone_bm25_p50_s": round(statistics.median(gone), 4),
            "delete_to_gone_bm25_max_s": round(max(gone), 4),
            "topology_start_s": round(start_s, 2),
        }
        config = {
            "topology": "chart", "chart": str(chart or CHART), "quick": quick, "fresh_items": n_fresh,
            "deletes": n_deletes, "seed_items": SEED_ITEMS, "pods": sorted(topo.pods),
            "broker": "env" if os.environ.get("TANDEM_KAFKA_BOOTSTRAP") else "private KRaft",
            "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        }  # fmt: skip
        return figures, config
