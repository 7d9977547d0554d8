"""Prometheus metrics and the grpc.health.v1 endpoint of the ingest consumer.

The Helm chart probes the consumer with native gRPC probes on ``--health-port`` and
scrapes ``/metrics`` on ``--metrics-port``; both are served from background threads.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

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


def start_metrics_server(port: int) -> None:
    """Serve ``/metrics`` over HTTP on ``port`` (all interfaces) from a daemon thread."""
    from prometheus_client import start_http_server

    start_http_server(port)


class HealthServer:
    """``grpc.health.v1.Health`` on ``port``: SERVING while the consumer loop runs."""

    def __init__(self, port: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        self._pb2 = health_pb2
        self._servicer = health.HealthServicer()
        self._server: Any = grpc.server(ThreadPoolExecutor(max_workers=2))
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, self._server)
        self.port = self._server.add_insecure_port(f"[::]:{port}")
        self._server.start()
        self.set(False)

    def set(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the overall server (service name ``""``)."""
        status = self._pb2.HealthCheckResponse.SERVING if serving else self._pb2.HealthCheckResponse.NOT_SERVING
        self._servicer.set("", status)

    def stop(self) -> None:
        """Stop answering (health checks then fail, which is the point during shutdown)."""
        self._server.stop(grace=None)
