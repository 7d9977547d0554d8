"""Issue 19 in the chart: ingest writes the very index sparse serves (one value), and object-store
mode refuses to render without the persistent volume the catalog store and index need."""

from __future__ import annotations

import pytest
from chart_render import component, of_kind, render, render_raw

KAFKA = ["ingest.enabled=true", "kafka.bootstrapServers=kafka:9092"]


def _args(objs: list[dict], name: str) -> list[str]:
    (dep,) = [d for d in of_kind(objs, "Deployment") if component(d) == name]
    return dep["spec"]["template"]["spec"]["containers"][0]["args"]


def _flag(args: list[str], flag: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
    return value


@pytest.mark.parametrize("index_dir", ["indexes/sparse", "/data/live-bm25"])
def test_ingest_writes_the_index_sparse_serves(index_dir: str) -> None:
    objs = render(sets=[*KAFKA, f"sparse.indexDir={index_dir}"])
    served = _flag(_args(objs, "sparse"), "--index")
    assert _flag(_args(objs, "ingest"), "--index") == served
    assert served.endswith(index_dir) and served.startswith("/")


@pytest.mark.parametrize("sets", [["artifacts.uri=s3://bucket/tandem", "artifacts.persistence.enabled=false"],
                                  ["artifacts.uri=s3://bucket/tandem", "artifacts.persistence.enabled=false", *KAFKA],
                                  ["artifacts.persistence.enabled=false", *KAFKA]])
def test_no_persistent_volume_for_the_index_fails_the_render_naming_the_fix(sets: list[str]) -> None:
    proc = render_raw(sets=sets)
    assert proc.returncode != 0
    assert "artifacts.persistence.enabled=true" in proc.stderr and "persistent volume" in proc.stderr


def test_object_store_mode_with_an_existing_claim_mounts_it_for_ingest_and_sparse() -> None:
    objs = render(sets=["artifacts.uri=s3://bucket/tandem", "artifacts.persistence.existingClaim=live-index", *KAFKA])
    assert not of_kind(objs, "PersistentVolumeClaim")  # the existing one is used, none created
    for dep in of_kind(objs, "Deployment"):
        claims = [v["persistentVolumeClaim"]["claimName"] for v in dep["spec"]["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]
        assert claims == (["live-index"] if component(dep) in ("ingest", "sparse") else []), component(dep)


def test_sparse_waits_for_the_index_ingest_creates_only_when_ingest_is_on() -> None:
    assert "--wait-for-index" in _args(render(sets=KAFKA), "sparse")
    assert "--wait-for-index" not in _args(render(sets=[]), "sparse")  # a prebuilt index: fail fast if absent


SNAPSHOT = ["sparse.indexSource=snapshot", "artifacts.uri=s3://bucket/tandem", *KAFKA]


def _claims(dep: dict) -> list[str]:
    return [v["persistentVolumeClaim"]["claimName"] for v in dep["spec"]["template"]["spec"]["volumes"]
            if "persistentVolumeClaim" in v]


def test_snapshot_mode_ingest_publishes_and_sparse_serves_copies_without_the_volume() -> None:
    objs = render(sets=[*SNAPSHOT, "sparse.snapshots.pollSeconds=3", "sparse.snapshots.keep=4"])
    ingest, sparse = _args(objs, "ingest"), _args(objs, "sparse")
    assert _flag(ingest, "--publish-snapshots") == "default" and _flag(ingest, "--snapshot-keep") == "4"
    assert _flag(ingest, "--snapshot-every") == "10"
    assert _flag(sparse, "--snapshots") == "default" and _flag(sparse, "--snapshot-poll-s") == "3"
    assert _flag(sparse, "--index").startswith("/tmp/") and "--wait-for-index" not in sparse
    deps = {component(d): d for d in of_kind(objs, "Deployment")}
    assert _claims(deps["ingest"]) and not _claims(deps["sparse"])  # readers need no ReadWriteOnce volume


def test_live_mode_is_the_default_and_publishes_nothing() -> None:
    objs = render(sets=KAFKA)
    assert not any(a.startswith("--publish-snapshots") for a in _args(objs, "ingest"))
    assert not any(a.startswith("--snapshots") for a in _args(objs, "sparse"))


def test_snapshot_mode_without_a_shared_registry_fails_naming_the_fix() -> None:
    proc = render_raw(sets=["sparse.indexSource=snapshot", *KAFKA])
    assert proc.returncode != 0 and "artifacts.uri" in proc.stderr and "ReadWriteMany" in proc.stderr
    ok = render(sets=["sparse.indexSource=snapshot", *KAFKA, "artifacts.persistence.accessModes={ReadWriteMany}"])
    assert _flag(_args(ok, "sparse"), "--snapshots") == "default"
