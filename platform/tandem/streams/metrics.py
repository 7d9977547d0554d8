"""Prometheus metrics and the grpc.health.v1 endpoint of the ingest consumer.

The Helm chart probes the consumer with native gRPC probes on ``--health-port`` and
scrapes ``/metrics`` on ``--metrics-port``; both are served from background threads.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from tandem.ports import EXCLUSIVE_PORT, add_port

EVENTS = Counter(
    "tandem_ingest_events", "Item events seen by the ingest consumer, by outcome.",
    ["outcome"],  # applied | duplicate | stale | dlq
)  # fmt: skip
BATCH_SECONDS = Histogram(
    "tandem_ingest_batch_seconds", "Time to apply one batch to the store and the index.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
LAST_APPLIED = Gauge("tandem_ingest_last_applied_timestamp_seconds", "Unix time of the last applied batch.")
STORE_SEQ = Gauge("tandem_ingest_store_seq", "Sequence number of the latest change in the catalog store.")
LOOP_BEAT = Gauge("tandem_ingest_loop_heartbeat_timestamp_seconds", "Unix time of the consumer loop's last turn.")

LIVENESS_STALE_S = 120.0
"""A consumer loop silent for longer than this reports NOT_SERVING (the pod is restarted)."""


class Heartbeat:
    """When the consumer loop last turned. Each poll (every ~100 ms when idle), each batch and
    each dead-letter retry beats it; :class:`HealthServer` reports NOT_SERVING once it is stale,
    so liveness follows loop progress rather than the process merely being alive."""

    def __init__(self) -> None:
        self._last: float | None = None

    def beat(self) -> None:
        """Record one turn of the loop (cheap: called on every poll)."""
        self._last = time.monotonic()
        LOOP_BEAT.set_to_current_time()

    def age(self) -> float | None:
        """Seconds since the last beat; ``None`` before the first (no loop to follow yet)."""
        return None if self._last is None else time.monotonic() - self._last


LOOP = Heartbeat()
"""The ingest consumer's loop heartbeat (one consumer per process)."""


def start_metrics_server(port: int) -> None:
    """Serve ``/metrics`` over HTTP on ``port`` (all interfaces) from a daemon thread."""
    from prometheus_client import start_http_server

    start_http_server(port)


class HealthServer:
    """``grpc.health.v1.Health`` on ``port``: SERVING while the consumer loop runs and turns.

    After :meth:`set` ``(True)`` a watchdog thread reports NOT_SERVING whenever ``heartbeat``
    is older than ``stale_after_s`` (a loop stuck in a batch, a wedged client) and SERVING
    again when it beats.

    The port is bound exclusively (:data:`tandem.ports.EXCLUSIVE_PORT`): a busy one raises
    :class:`tandem.ports.PortInUse` naming it, instead of two consumers splitting the probes.
    """

    def __init__(self, port: int, *, heartbeat: Heartbeat | None = None, stale_after_s: float = LIVENESS_STALE_S,
                 check_every_s: float = 1.0) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        self._pb2 = health_pb2
        self._servicer = health.HealthServicer()
        self._server: Any = grpc.server(ThreadPoolExecutor(max_workers=2), options=[EXCLUSIVE_PORT],
                                        maximum_concurrent_rpcs=8)
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, self._server)
        self.port = add_port(self._server, "[::]", port, what="health port",
                             holder="another `tandem stream consume`")
        self.heartbeat = heartbeat or LOOP
        self.stale_after_s = stale_after_s
        self._wanted = False
        self._done = threading.Event()
        self._server.start()
        self.set(False)
        self._watchdog = threading.Thread(target=self._watch, args=(check_every_s,), name="ingest-liveness",
                                          daemon=True)
        self._watchdog.start()

    @property
    def live(self) -> bool:
        """Whether the loop beat within ``stale_after_s`` (or has not started beating yet)."""
        age = self.heartbeat.age()
        return age is None or age <= self.stale_after_s

    def set(self, serving: bool) -> None:
        """Report SERVING (while the heartbeat is fresh) or NOT_SERVING for service ``""``."""
        self._wanted = serving
        self._publish()

    def _publish(self) -> None:
        ok = self._wanted and self.live
        self._servicer.set("", self._pb2.HealthCheckResponse.SERVING if ok else self._pb2.HealthCheckResponse.NOT_SERVING)

    def _watch(self, every_s: float) -> None:
        while not self._done.wait(every_s):
            self._publish()

    def stop(self) -> None:
        """Stop answering (health checks then fail, which is the point during shutdown)."""
        self._done.set()
        self._server.stop(grace=None)
