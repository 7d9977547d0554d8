"""The chart's rendered command lines start real Tandem servers that pass the chart's probes.

Renders the chart, takes a container's ``args`` and environment exactly as Kubernetes would
run them (only the ports are moved to free loopback ports, the bind address to loopback and the
mounted Secret files to a temporary folder), starts ``tandem <args>`` as a subprocess and then does what the kubelet
and Prometheus do: a grpc.health.v1 check on the probe port and a GET of ``/metrics``. It also
checks the auth wiring: no token is refused, the internal token the chart hands the retrievers
(the Secret's ``internal-token`` file) is accepted, a client token is not; the gateway takes
client tokens for searches and admin tokens for AdminService.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tandem"
START_TIMEOUT_S = 60.0


def _helm() -> str:
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "helm.sh"), "path"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"Helm is not installed: run `make setup` (or `bash scripts/helm.sh install`).\n{proc.stderr}",
                    pytrace=False)
    return proc.stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _container(component: str, sets: list[str]) -> dict[str, Any]:
    """The rendered container of ``component``, with TLS off: these checks speak plaintext to
    the gRPC port (TLS, on by default, is run end to end by test_chart_topology.py)."""
    args = ["template", "tdm", ".", "--namespace", "search", "--kube-version", "1.30.0"]
    for s in ["tls.enabled=false", *sets]:
        args += ["--set", s]
    proc = subprocess.run([_helm(), *args], cwd=CHART, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    for obj in yaml.safe_load_all(proc.stdout):
        if obj and obj["kind"] == "Deployment" and \
                obj["metadata"]["labels"]["app.kubernetes.io/component"] == component:
            return obj["spec"]["template"]["spec"]["containers"][0]
    raise AssertionError(f"no {component} Deployment rendered")


class Running:
    """A ``tandem`` subprocess started from a rendered container spec."""

    def __init__(self, container: dict[str, Any], tmp: Path, env: dict[str, str]) -> None:
        self.grpc_port, self.metrics_port = _free_port(), _free_port()
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        self.probe_port = container["readinessProbe"]["grpc"]["port"]
        assert self.probe_port == ports["grpc"], "TLS is off here: probes must use the gRPC port"
        args = []
        for arg in container["args"]:
            arg = arg.replace(f"--port={ports['grpc']}", f"--port={self.grpc_port}")
            arg = arg.replace(f"--metrics-port={ports['metrics']}", f"--metrics-port={self.metrics_port}")
            arg = arg.replace("/etc/tandem/auth/", f"{tmp}/auth/")
            arg = arg.replace("--host=0.0.0.0", "--host=127.0.0.1")  # a pod's interfaces are its own; ours are not
            # In-cluster Service addresses -> a loopback port nobody listens on.
            arg = re.sub(r"=[a-z0-9-]+\.search\.svc:\d+$", f"=127.0.0.1:{_free_port()}", arg)
            args.append(arg)
        assert f"--port={self.grpc_port}" in args and f"--metrics-port={self.metrics_port}" in args
        self.log = (tmp / "server.log").open("w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "tandem_app.cli", *args], cwd=tmp,
                                     env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait_serving(self) -> None:
        """Poll grpc.health.v1 on the probe port like the kubelet's startup probe does."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.output()}")
            with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as ch:
                try:
                    resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
            time.sleep(0.3)
        pytest.fail(f"not SERVING within {START_TIMEOUT_S} s:\n{self.output()}")

    def stop(self) -> None:
        self.proc.terminate()  # what the kubelet sends first
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _gateway(container: dict[str, Any], tmp: Path) -> Running:
    """Start the gateway ``container`` with a client token and an admin token in its auth folder."""
    (tmp / "auth").mkdir()
    (tmp / "auth" / "tokens").write_text("client-token\n")
    (tmp / "auth" / "admin-tokens").write_text("admin-token\n")
    return Running(container, tmp, {"TANDEM_DOWNSTREAM_TOKEN": "internal-token"})


@pytest.fixture
def intent_server(tmp_path: Path) -> Iterator[Running]:
    container = _container("intent", ["intent.enabled=true"])
    (tmp_path / "auth").mkdir()
    (tmp_path / "auth" / "tokens").write_text("client-token\n")
    # The mounted Secret's keys: the chart points the intent service at the internal token's file.
    (tmp_path / "auth" / "internal-token").write_text("internal-token")
    server = Running(container, tmp_path, {})
    try:
        server.wait_serving()
        yield server
    finally:
        server.stop()


def test_rendered_intent_command_serves_health_metrics_and_auth(intent_server: Running) -> None:
    import grpc
    from tandem.v1 import intent_pb2, intent_pb2_grpc

    with urllib.request.urlopen(f"http://127.0.0.1:{intent_server.metrics_port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert b"# TYPE" in resp.read()

    with grpc.insecure_channel(f"127.0.0.1:{intent_server.grpc_port}") as ch:
        stub = intent_pb2_grpc.IntentServiceStub(ch)
        request = intent_pb2.DecomposeRequest(query="cordless drill under 100 dollars")
        with pytest.raises(grpc.RpcError) as err:
            stub.Decompose(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.Decompose(request, timeout=5, metadata=(("authorization", "Bearer internal-token"),))
        assert reply.ListFields(), "empty reply with the internal token"
        with pytest.raises(grpc.RpcError) as err:  # internal services accept the internal token only
            stub.Decompose(request, timeout=5, metadata=(("authorization", "Bearer client-token"),))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_rendered_gateway_command_starts_and_requires_a_token(tmp_path: Path) -> None:
    """The gateway with the chart's arguments (retrievers unreachable) is up, scraped and guarded."""
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from tandem.v1 import admin_pb2, admin_pb2_grpc, search_pb2, search_pb2_grpc

    container = _container("gateway", [])
    env = {e["name"]: e for e in container["env"]}
    assert env["TANDEM_DOWNSTREAM_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "internal-token"
    server = _gateway(container, tmp_path)
    try:
        server.wait_serving()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as resp:
            assert resp.status == 200
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
            with pytest.raises(grpc.RpcError) as err:
                search_pb2_grpc.SearchServiceStub(ch).Search(search_pb2.SearchRequest(query="drill"), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            admin = admin_pb2_grpc.AdminServiceStub(ch)
            with pytest.raises(grpc.RpcError) as err:  # client tokens search; Admin needs an admin token
                admin.Versions(admin_pb2.VersionsRequest(), timeout=5, metadata=(("authorization", "Bearer client-token"),))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            admin.Versions(admin_pb2.VersionsRequest(), timeout=5, metadata=(("authorization", "Bearer admin-token"),))
            # Reflection is off on the public gateway by default (gateway.reflection).
            reflect = reflection_pb2_grpc.ServerReflectionStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                list(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                  timeout=5))
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop()



def test_rendered_gateway_ranks_with_the_fusion_model_promoted_in_the_registry_it_is_given(tmp_path: Path) -> None:
    """With the generative service following the registry, the chart's gateway (``--fusion auto``)
    reads that registry and serves the learned fusion promoted with its current base."""
    import random

    import grpc
    from tandem.fusion import RankedList
    from tandem.fusion.learned import Example, LearnedFusion, title_lookup
    from tandem.registry import ArtifactKind, Registry
    from tandem.registry.fusion import MODEL_FILE
    from tandem.retriever import Hit
    from tandem.v1 import admin_pb2, admin_pb2_grpc

    rng = random.Random(0)
    examples = []
    for q in range(30):
        items = [f"q{q}i{j}" for j in range(8)]
        rel = rng.choice(items)
        hits = [Hit(i, float(i == rel) + rng.random(), "bm25") for i in items]
        examples.append(Example([RankedList("bm25", hits, "q")], {rel: 4}))
    model, _ = LearnedFusion.train(examples[:20], examples[20:], titles=title_lookup({}),
                                   grid=[{"num_leaves": 4, "learning_rate": 0.2, "min_data_in_leaf": 5}])
    reg = Registry(tmp_path / "registry")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "weights.bin").write_bytes(b"base")
    base = reg.publish(ArtifactKind.BASE_MODEL, tmp_path / "base", promote=True)
    (tmp_path / "fusion").mkdir()
    model.save(tmp_path / "fusion" / MODEL_FILE)
    (tmp_path / "fusion" / "report.json").write_text("{}")
    reg.publish(ArtifactKind.FUSION, tmp_path / "fusion", parents=[f"base-model:{base}"], promote=True)

    container = _container("gateway", ["generative.registry.enabled=true"])
    assert "--registry=/var/lib/tandem/registry" in container["args"]
    container["args"] = [a.replace("/var/lib/tandem/registry", str(tmp_path / "registry")) for a in container["args"]]
    server = _gateway(container, tmp_path)
    try:
        server.wait_serving()
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
            got = admin_pb2_grpc.AdminServiceStub(ch).Versions(
                admin_pb2.VersionsRequest(), timeout=5, metadata=(("authorization", "Bearer admin-token"),))
        assert dict(got.versions)["fusion"] == model.version(), server.output()
    finally:
        server.stop()
