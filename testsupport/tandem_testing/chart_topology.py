"""The Helm chart's serving topology run as local processes: ingest → sparse ← gateway → generative.

:class:`ChartTopology` renders ``charts/tandem`` (ingest on, the given Kafka and Redis as the
external ones), turns the ingest, sparse, generative and gateway Deployments into local
command lines with :mod:`tandem_testing.chart_pods`, starts them all as a fresh install does
(before any event, so before the index exists) and waits for each readiness probe
(grpc.health.v1), as a kubelet would; then the seed catalog is published and must become
searchable through the gateway. Item events published to the topic must become visible through the gateway's
``SearchService`` — the path of a deployed system, across processes, with the chart's own
arguments, environment and volume layout.

The generative pod serves :class:`tandem_testing.term_overlap.TermOverlapRetriever` over the
seed catalog (``generative.modelDir=""`` + ``--factory`` in ``generative.extraArgs``, the chart's
documented way to plug another retriever in): no model is trained for a wiring test.

Used by ``tests/integration/test_chart_topology.py`` and ``bench.freshness --topology chart``.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Self
from urllib.parse import urlsplit

from tandem.catalog.events import ItemEvent
from tandem.catalog.item import Item
from tandem.errors import Unavailable
from tandem_testing.chart_pods import CHART, LocalPod, PodPlan, local_pod, render, rendered_secrets

CLIENT_TOKEN = "client-token"
INTERNAL_TOKEN = "internal-token"
ADMIN_TOKEN = "admin-token"
#: Where the chart mounts the TLS Secret in every pod.
TLS_MOUNT = "/etc/tandem/tls"
START_TIMEOUT_S = 120.0
SERVING_ORDER = ("sparse", "generative", "gateway")


def chart_values(kafka_bootstrap: str, topic: str, redis_url: str | None, seed_path: str) -> dict[str, Any]:
    """Values for a chart with ingest on, external Kafka/Redis and the term-overlap generative."""
    values: dict[str, Any] = {
        "ingest": {"enabled": True},
        # A group of its own: topologies sharing a broker (a test session, a bench) never rebalance each other.
        "kafka": {"bootstrapServers": kafka_bootstrap, "itemsTopic": topic, "dlqTopic": f"{topic}.dlq",
                  "consumerGroup": f"{topic}.ingest"},
        "generative": {"modelDir": "", "extraArgs": ["--factory=tandem_testing.term_overlap:from_jsonl",
                                                     f"--factory-arg={seed_path}"]},
    }
    if redis_url:
        parts = urlsplit(redis_url)
        values["redis"] = {"mode": "external", "external": {"host": parts.hostname, "port": parts.port or 6379}}
    return values


def _base_env() -> dict[str, str]:
    """This process's environment without ``TANDEM_*`` (a pod sees only what the chart sets);
    the JDK setting stays, as the image's ``ENV`` provides one."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_") or k == "TANDEM_JAVA_HOME"}


class PodProcess:
    """A planned pod run as a child process, its output in ``<workdir>/logs/<component>.log``."""

    def __init__(self, pod: LocalPod, logs: Path) -> None:
        self.pod = pod
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{pod.component}.log"
        self._log: IO[str] = self.log_path.open("w")
        argv = [sys.executable, "-m", "tandem_app.cli", *pod.argv[1:]]  # the ENTRYPOINT, in this venv
        cwd = pod.mounts.get("/tmp", logs)
        import subprocess

        self.proc = subprocess.Popen(argv, cwd=cwd, env={**_base_env(), **pod.env}, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def output(self, tail: int = 60) -> str:
        """The last ``tail`` lines of the pod's log."""
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])

    def serving(self) -> bool:
        """One readiness check: grpc.health.v1 ``Check("")`` on the probe port is SERVING."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{self.pod.probe_port}") as ch:
            try:
                reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def wait_serving(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Poll readiness like the kubelet; :class:`Unavailable` with the log when it exits or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"{self.pod.component} exited with {self.proc.returncode}:\n{self.output()}")
            if self.serving():
                return
            time.sleep(0.25)
        raise Unavailable(f"{self.pod.component} not SERVING within {timeout_s:.0f} s:\n{self.output()}")

    def terminate(self) -> None:
        """Send SIGTERM (what the kubelet sends first) without waiting; :meth:`stop` waits."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def stop(self) -> None:
        """SIGTERM (what the kubelet sends first), SIGKILL after 20 s."""
        import subprocess

        self.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class ChartTopology:
    """Ingest, sparse, generative and gateway from the rendered chart, as local processes.

    ``seed`` is published first (it creates the index and is the generative pod's catalog).
    ``chart`` may point at another checkout of the chart (e.g. an older one, to show a
    regression). Use as a context manager; :meth:`search` asks the gateway as a client would.
    """

    def __init__(self, kafka_bootstrap: str, workdir: Path, seed: Sequence[Item], *, redis_url: str | None = None,
                 chart: Path = CHART, topic: str | None = None) -> None:
        self.kafka_bootstrap = kafka_bootstrap
        self.workdir = workdir
        self.seed = list(seed)
        self.redis_url = redis_url
        self.chart = chart
        self.topic = topic or f"chart.items.{uuid.uuid4().hex[:8]}"
        self.pods: dict[str, PodProcess] = {}
        self._producer: Any = None
        self._client: Any = None
        self._tls_ca: Path | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Render, start every pod (no index yet, as on a fresh install), publish the seed and
        wait until the gateway finds it through the BM25 source."""
        mount = "/var/lib/tandem"
        objects = render(chart_values(self.kafka_bootstrap, self.topic, self.redis_url, f"{mount}/seed/items.jsonl"),
                         chart=self.chart)
        secrets = {"tdm-tandem-auth": {"tokens": f"{CLIENT_TOKEN}\n", "internal-token": INTERNAL_TOKEN,
                                       "admin-tokens": f"{ADMIN_TOKEN}\n"}}
        secrets.update(rendered_secrets(objects))  # the TLS pair the chart generates (TLS is on by default)
        plan = PodPlan(self.workdir, secrets, objects)
        planned = {c: local_pod(plan, c) for c in ("ingest", *SERVING_ORDER)}
        if any(a.startswith("--tls-cert=") for a in planned["gateway"].argv):  # clients trust the chart's CA
            self._tls_ca = planned["gateway"].local_path(f"{TLS_MOUNT}/ca.crt")
        seed_file = planned["generative"].local_path(f"{mount}/seed/items.jsonl")
        seed_file.parent.mkdir(parents=True, exist_ok=True)
        seed_file.write_text("".join(i.model_dump_json() + "\n" for i in self.seed))
        try:
            self._create_topic()
            # Launched together, as a Deployment's pods are, then waited for one by one: their
            # start-ups (imports, JVM) overlap instead of running back to back.
            for component in ("ingest", *SERVING_ORDER):
                self.pods[component] = PodProcess(planned[component], self.workdir / "logs")
            for component in ("ingest", *SERVING_ORDER):
                self.pods[component].wait_serving()
            self.publish(ItemEvent.upsert(i) for i in self.seed)
            self._wait_for_index(planned["sparse"])
            probe = self.seed[0]
            self.wait_until(probe.attributes.get("model") or probe.title, probe.item_id, present=True, source="bm25",
                            timeout_s=START_TIMEOUT_S / 4)
        except BaseException:
            self.close()
            raise
        return self

    def _create_topic(self) -> None:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.kafka_bootstrap, client_id="tandem-chart-topology")
        try:
            admin.create_topics({self.topic: {"num_partitions": 3, "replication_factor": 1}}, wait_for_metadata=True)
        finally:
            admin.close()

    def _wait_for_index(self, sparse: LocalPod, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the index sparse is told to serve has a Lucene commit (ingest wrote the seed)."""
        arg = next((a for a in sparse.argv if a.startswith("--index=")), None)
        if arg is None:
            raise Unavailable(f"the sparse pod has no --index argument: {sparse.argv}")
        index = Path(arg.split("=", 1)[1])
        deadline = time.monotonic() + timeout_s
        while not any(index.glob("segments_*")):
            ingest = self.pods["ingest"]
            if ingest.proc.poll() is not None or time.monotonic() > deadline:
                written = sorted(str(p.parent.relative_to(self.workdir)) for p in self.workdir.rglob("segments_*"))
                raise Unavailable(f"no Lucene commit in {index} (the index sparse serves) within {timeout_s:.0f} s; "
                                  f"commits found: {written or 'none'}\n{self.stream_state()}\n{ingest.output()}")
            time.sleep(0.1)

    def stream_state(self) -> str:
        """The topic's end offsets and the ingest group's committed offsets and state, for a
        failure message: whether the events reached the broker and where the consumer stands."""
        from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

        group, parts = f"{self.topic}.ingest", []
        try:  # each part on its own: a diagnostic must not hide the failure it explains
            consumer = KafkaConsumer(bootstrap_servers=self.kafka_bootstrap, group_id=None)
            try:
                tps = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or ())]
                ends = {tp.partition: n for tp, n in consumer.end_offsets(tps).items()} if tps else {}
                parts.append(f"topic {self.topic} end offsets {ends}")
            finally:
                consumer.close()
        except Exception as e:  # noqa: BLE001
            parts.append(f"topic {self.topic}: {e!r}")
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.kafka_bootstrap, client_id="tandem-chart-topology")
            try:
                offsets = admin.list_group_offsets({group: None}).get(group, {})
                described = admin.describe_groups([group]).get(group, {})
                parts.append(f"group {group} committed {({tp.partition: om.offset for tp, om in offsets.items()})}, "
                             f"state {described.get('group_state')!r}, members {len(described.get('members') or [])}")
            finally:
                admin.close()
        except Exception as e:  # noqa: BLE001
            parts.append(f"group {group}: {e!r}")
        return "; ".join(parts)

    def close(self) -> None:
        """Stop the pods (the servers together first, ingest last) and the clients."""
        servers = [self.pods.pop(c) for c in reversed(SERVING_ORDER) if c in self.pods]
        for pod in servers:
            pod.terminate()  # their graceful shutdowns overlap
        for pod in [*servers, *self.pods.values()]:
            pod.stop()
        self.pods.clear()
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what clients do -----------------------------------------------------------------

    def publish(self, events: Iterable[ItemEvent], *, wait: bool = True) -> None:
        """Publish item events to the chart's items topic (idempotent producer, acks=all)."""
        if self._producer is None:
            from tandem.streams.config import StreamSettings
            from tandem.streams.producer import EventProducer

            settings = StreamSettings(kafka_bootstrap=self.kafka_bootstrap, items_topic=self.topic)
            self._producer = EventProducer(settings)
        self._producer.publish(list(events), wait=wait)
        if not wait:
            self._producer.flush()

    @property
    def gateway_target(self) -> str:
        """``127.0.0.1:<port>`` of the gateway's gRPC port."""
        return f"127.0.0.1:{self.pods['gateway'].pod.ports['grpc']}"

    def search(self, query: str, top_k: int = 10, token: str = CLIENT_TOKEN) -> dict[str, set[str]]:
        """The gateway's hits for ``query`` (a client's search with a client token): item id →
        the sources that ranked it (the hit's provenance)."""
        if self._client is None:
            from tandem_services.client import ChannelOptions, SearchClient

            self._client = SearchClient(self.gateway_target, ChannelOptions(token=token, tls_ca=self._tls_ca),
                                        timeout_s=5.0)
        return {h.item_id: {p.source for p in h.provenance} for h in self._client.search(query, top_k=top_k).hits}

    def wait_until(self, query: str, item_id: str, *, present: bool, source: str | None = None,
                   since: float | None = None, timeout_s: float = 30.0, poll_s: float = 0.02) -> float:
        """Seconds from ``since`` (a ``time.perf_counter()``; default now) until ``item_id`` is
        (or, with ``present=False``, is no longer) among the gateway's hits for ``query`` —
        ranked by ``source`` when given (e.g. ``bm25``: the served index has the change)."""
        t0 = time.perf_counter() if since is None else since
        while True:
            hits = self.search(query)
            found = item_id in hits and (source is None or source in hits[item_id])
            if found == present:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout_s:
                state = "found" if present else "gone"
                by = f" (by {source})" if source else ""
                raise TimeoutError(f"{item_id} not {state}{by} for {query!r} through the gateway within "
                                   f"{timeout_s} s; hits: {hits}")
            time.sleep(poll_s)
