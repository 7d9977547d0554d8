"""Hot swap under load: the generative service follows the registry's current pointers.

A real gRPC RetrieverService on loopback serves :class:`HotSwapRetriever` over a registry in
a temp folder. A bounded request loop (several client threads) runs throughout while an
adapter is promoted, then a corrupted adapter, then a new base: no request may fail, the
versions reported by ``Info``/``AdminService`` follow the pointers, the new items become
reachable only once their adapter is served, and the corrupt one is refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tandem_testing.model_fixtures import untrained_model_dir
from tandem.generative.reload import HotSwapRetriever
from tandem.registry import ArtifactKind, Registry
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.training.adapter import AdapterConfig, train_adapter
from tandem.training.peft_methods import ADAPTER_WEIGHTS, PeftSpec
from tandem.v1 import admin_pb2, admin_pb2_grpc
from tandem_services.app import BatchOptions, retriever_server
from tandem_services.client import RemoteRetriever
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions

pytestmark = pytest.mark.integration

NEW_IDS = {"t22", "t23", "t24"}
POLL_S = 0.1
QUERIES = ["cordless drill", "garden hose", "kitchen faucet", "led bulb"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("reload")
    cat = tiny_catalog()
    old = [it for it in cat if it.item_id not in NEW_IDS]
    new = [it for it in cat if it.item_id in NEW_IDS]
    base = untrained_model_dir(root / "base", old)
    base2 = untrained_model_dir(root / "base2", old, seed=7)
    cfg = AdapterConfig(peft=PeftSpec(rank=2, alpha=4), epochs=1, queries_per_item=1, eval_old_items=4, threads=1,
                        device="cpu", precision="fp32", num_beams=2)
    train_adapter(base, new, old, root / "adapter", cfg)
    return {"base": base, "base2": base2, "adapter": root / "adapter"}


@pytest.fixture
def served(tmp_path: Path, artifacts: dict[str, Path]) -> Iterator[tuple[Registry, BackgroundServer, str]]:
    reg = Registry(str(tmp_path / "registry"))
    base_v = reg.publish(ArtifactKind.BASE_MODEL, artifacts["base"], promote=True)
    srv = BackgroundServer(lambda: retriever_server(
        # batch_size 4 with 16 queries per request: each request decodes several chunks, so
        # requests are in flight across every swap (a model closed under them would fail).
        [HotSwapRetriever(reg, interval_s=POLL_S, device="cpu", num_beams=4, batch_size=4)],
        ServerOptions(drain_s=0.0, grace_s=2.0), batch=BatchOptions(max_wait_ms=2)))
    srv.start()
    yield reg, srv, base_v
    srv.stop()


def _versions(address: str) -> dict[str, str]:
    with grpc.insecure_channel(address) as ch:
        return dict(admin_pb2_grpc.AdminServiceStub(ch).Versions(admin_pb2.VersionsRequest(), timeout=5).versions)


def _wait_for(address: str, predicate, what: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = _versions(address)["generative"]
        if predicate(v):
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; serving {_versions(address)}")


class Load:
    """A bounded request loop: ``threads`` clients, each sending requests until stopped
    (at most ``limit`` each), recording every failure and every version seen."""

    def __init__(self, address: str, threads: int = 3, limit: int = 5000) -> None:
        self.client = RemoteRetriever(address, "generative", timeout_s=10.0, version_ttl_s=0.0)
        self.ok = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.workers = [threading.Thread(target=self._loop, args=(i, limit)) for i in range(threads)]

    def _loop(self, i: int, limit: int) -> None:
        for n in range(limit):
            if self.stop.is_set():
                return
            try:
                hits = self.client.retrieve([QUERIES[(i + n + j) % len(QUERIES)] for j in range(16)], 5)
                assert len(hits) == 16 and all(len(h) == 5 for h in hits)
                with self.lock:
                    self.ok += 1
            except Exception as exc:  # every failure counts, whatever its kind
                with self.lock:
                    self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        for w in self.workers:
            w.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for w in self.workers:
            w.join(timeout=30)
        self.client.close()


def _reachable(address: str) -> set[str]:
    """Every item the served trie can return (beam as wide as the catalog)."""
    client = RemoteRetriever(address, "generative", timeout_s=30.0)
    try:
        return {h.item_id for h in client.retrieve(["anything"], 24)[0]}
    finally:
        client.close()


def test_swaps_under_load_without_a_failed_request(served, artifacts: dict[str, Path], tmp_path: Path) -> None:
    reg, srv, base_v = served
    address = srv.address
    v0 = _versions(address)["generative"]
    assert v0 == f"base-model:{base_v}+adapter:none"
    assert not NEW_IDS & _reachable(address)

    with Load(address) as load:
        time.sleep(0.3)
        # 1. A new adapter on the current base: swapped in, new items reachable.
        a1 = reg.publish(ArtifactKind.ADAPTER, artifacts["adapter"], parents=[f"base-model:{base_v}"], promote=True)
        v1 = _wait_for(address, lambda v: f"adapter:{a1}" in v, "the adapter swap")
        served_during = load.ok
        time.sleep(0.3)
        # 2. A corrupted adapter promoted behind the registry's back: refused, v1 stays.
        a2 = reg.publish(ArtifactKind.ADAPTER, artifacts["adapter"], parents=[f"base-model:{base_v}"], promote=True)
        weights = Path(reg.get(ArtifactKind.ADAPTER, a2).local_path) / ADAPTER_WEIGHTS
        raw = bytearray(weights.read_bytes())
        raw[-5] ^= 0xFF
        weights.write_bytes(bytes(raw))
        time.sleep(10 * POLL_S)
        assert _versions(address)["generative"] == v1
        # 3. A new base: the old adapter (trained on another base) is not served with it.
        b2 = reg.publish(ArtifactKind.BASE_MODEL, artifacts["base2"], promote=True)
        v3 = _wait_for(address, lambda v: f"base-model:{b2}" in v, "the base swap")
        time.sleep(0.3)
    assert v3 == f"base-model:{b2}+adapter:none"
    assert load.failures == [], load.failures[:3]
    assert load.ok > served_during > 0  # requests ran before, during and after the swaps
    assert NEW_IDS.isdisjoint(_reachable(address))


def test_new_items_are_served_once_their_adapter_is(served, artifacts: dict[str, Path]) -> None:
    reg, srv, base_v = served
    reg.publish(ArtifactKind.ADAPTER, artifacts["adapter"], parents=[f"base-model:{base_v}"], promote=True)
    _wait_for(srv.address, lambda v: "adapter:none" not in v, "the adapter swap")
    assert NEW_IDS <= _reachable(srv.address)
    # Info reports the same version the admin API does (what the gateway's cache keys use).
    client = RemoteRetriever(srv.address, "generative", version_ttl_s=0.0)
    try:
        assert client.version() == _versions(srv.address)["generative"]
    finally:
        client.close()


def test_reload_rpc_swaps_at_once(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    reg = Registry(str(tmp_path / "registry"))
    base_v = reg.publish(ArtifactKind.BASE_MODEL, artifacts["base"], promote=True)
    retriever = HotSwapRetriever(reg, watch=False, device="cpu", num_beams=4)
    try:
        assert not retriever.reload()  # nothing moved
        a1 = reg.publish(ArtifactKind.ADAPTER, artifacts["adapter"], parents=[f"base-model:{base_v}"], promote=True)
        assert retriever.reload() and retriever.version().endswith(f"adapter:{a1}")
        # An adapter whose registry parents name another base is not attached.
        other = reg.publish(ArtifactKind.BASE_MODEL, artifacts["base2"])
        reg.publish(ArtifactKind.ADAPTER, artifacts["adapter"], parents=[f"base-model:{other}"], promote=True)
        assert retriever.reload() and retriever.version() == f"base-model:{base_v}+adapter:none"
    finally:
        retriever.close()


def test_serve_loader_uses_the_registry(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    from tandem.errors import InvalidInput
    from tandem_services.app import load_generative

    uri = str(tmp_path / "registry")
    Registry(uri).publish(ArtifactKind.BASE_MODEL, artifacts["base"], promote=True)
    retriever = load_generative(None, None, registry=uri, poll_s=5.0)
    try:
        assert isinstance(retriever, HotSwapRetriever) and retriever.interval_s == 5.0
        assert retriever.version().endswith("+adapter:none")
    finally:
        retriever.close()
    with pytest.raises(InvalidInput, match="`registry`"):
        load_generative(str(artifacts["base"]), None, registry=uri)
    plain = load_generative(str(artifacts["base"]), None, adapter=str(artifacts["adapter"]))
    assert "+" in plain.version() and len(plain.artifact.id_map) == 24
    plain.close()


def test_object_store_registry_is_downloaded_once_per_version(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    import uuid

    reg = Registry(f"memory://tandem-reload-{uuid.uuid4().hex}")
    base_v = reg.publish(ArtifactKind.BASE_MODEL, artifacts["base"], promote=True)
    retriever = HotSwapRetriever(reg, watch=False, cache_dir=tmp_path / "cache", device="cpu")
    try:
        local = tmp_path / "cache" / "base-model" / base_v
        assert (local / "model.safetensors").is_file()
        assert not list((tmp_path / "cache" / "base-model").glob("*.part"))
        a1 = reg.publish(ArtifactKind.ADAPTER, artifacts["adapter"], parents=[f"base-model:{base_v}"], promote=True)
        assert retriever.reload() and retriever.version().endswith(f"adapter:{a1}")
        assert (tmp_path / "cache" / "adapter" / a1 / ADAPTER_WEIGHTS).is_file()
    finally:
        retriever.close()
