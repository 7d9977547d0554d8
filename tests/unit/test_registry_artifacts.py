"""Artifact registry: manifests, checksum refusal, the atomic current pointer and fallback."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from tandem.errors import CorruptArtifact, InvalidInput, NotFound
from tandem.registry import ArtifactKind, Registry
from tandem.registry.store import CORRUPT


def _src(tmp_path: Path, name: str, payload: bytes = b"weights") -> Path:
    src = tmp_path / name
    (src / "sub").mkdir(parents=True)
    (src / "model.bin").write_bytes(payload)
    (src / "sub" / "config.json").write_text('{"d": 8}')
    return src


@pytest.fixture(params=["local", "file", "memory"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Registry:
    if request.param == "local":
        return Registry(tmp_path / "reg")
    if request.param == "file":
        return Registry(f"file://{tmp_path / 'reg'}")
    return Registry(f"memory://reg-{uuid.uuid4().hex}")


def _corrupt(reg: Registry, kind: str, version: str, rel: str = "model.bin") -> None:
    path = f"{reg.root}/{kind}/{version}/{rel}"
    reg.fs.pipe_file(path, b"bit rot")


def test_publish_writes_a_manifest_with_checksums(registry: Registry, tmp_path: Path) -> None:
    base = registry.publish("base-model", _src(tmp_path, "b"), metrics={"r@10": 0.41})
    idmap = registry.publish(ArtifactKind.ID_MAP, _src(tmp_path, "i", b"ids"))
    ad = registry.publish("adapter", _src(tmp_path, "a", b"lora"), parents=[f"base-model:{base}", f"id-map:{idmap}"])
    art = registry.get("adapter", ad)
    m = art.manifest
    assert m.kind == ArtifactKind.ADAPTER and m.version == ad and m.format_version == "1.0"
    assert m.parents == [f"base-model:{base}", f"id-map:{idmap}"]
    assert set(m.files) == {"model.bin", "sub/config.json"}
    import hashlib

    assert m.files["model.bin"].sha256 == hashlib.sha256(b"lora").hexdigest()
    assert registry.manifest("base-model", base).metrics == {"r@10": 0.41}
    assert registry.versions("adapter") == [ad]
    out = registry.download("adapter", ad, tmp_path / "dl")
    assert (out / "model.bin").read_bytes() == b"lora"


def test_bad_inputs_are_refused(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="`kind`"):
        registry.publish("checkpoint", _src(tmp_path, "x"))
    with pytest.raises(NotFound, match="`parents`"):
        registry.publish("adapter", _src(tmp_path, "y"), parents=["base-model:nope"])
    with pytest.raises(InvalidInput, match="`parents`"):
        registry.publish("adapter", _src(tmp_path, "z"), parents=["no-colon"])
    with pytest.raises(NotFound):
        registry.get("adapter", "20990101T000000Z-00000000")


def test_checksum_mismatch_refuses_the_artifact(registry: Registry, tmp_path: Path) -> None:
    v = registry.publish("index", _src(tmp_path, "s"))
    _corrupt(registry, "index", v)
    with pytest.raises(CorruptArtifact, match="checksum mismatch in model.bin"):
        registry.get("index", v)
    with pytest.raises(CorruptArtifact):
        registry.promote("index", v)  # never point current at a refused artifact


def test_missing_or_extra_files_refuse_the_artifact(registry: Registry, tmp_path: Path) -> None:
    v = registry.publish("index", _src(tmp_path, "s"))
    registry.fs.pipe_file(f"{registry.root}/index/{v}/stray.txt", b"?")
    with pytest.raises(CorruptArtifact, match="stray.txt"):
        registry.get("index", v)
    registry.fs.rm(f"{registry.root}/index/{v}/stray.txt")
    registry.fs.rm(f"{registry.root}/index/{v}/sub/config.json")
    with pytest.raises(CorruptArtifact, match="config.json"):
        registry.get("index", v)


def test_promote_and_fallback_to_the_previous_good_version(registry: Registry, tmp_path: Path) -> None:
    v1 = registry.publish("adapter", _src(tmp_path, "a1", b"one"), promote=True)
    v2 = registry.publish("adapter", _src(tmp_path, "a2", b"two"))
    registry.promote("adapter", v2, expected=v1)
    assert registry.current("adapter") == v2
    assert registry.resolve_current("adapter").manifest.version == v2
    before = CORRUPT.labels("adapter")._value.get()
    _corrupt(registry, "adapter", v2)
    art = registry.resolve_current("adapter")
    assert art.manifest.version == v1  # keeps serving the previous good artifact
    assert CORRUPT.labels("adapter")._value.get() == before + 1
    _corrupt(registry, "adapter", v1)
    with pytest.raises(CorruptArtifact, match="no verifiable adapter"):
        registry.resolve_current("adapter")
    with pytest.raises(NotFound, match="no current base-model"):
        registry.resolve_current("base-model")


def test_promote_with_a_stale_expectation_is_refused(registry: Registry, tmp_path: Path) -> None:
    v1 = registry.publish("id-map", _src(tmp_path, "i1", b"1"))
    v2 = registry.publish("id-map", _src(tmp_path, "i2", b"2"))
    registry.promote("id-map", v1, expected=None)
    with pytest.raises(InvalidInput, match="`expected`"):
        registry.promote("id-map", v2, expected=None)
    assert registry.current("id-map") == v1


def test_local_pointer_is_replaced_atomically_under_concurrent_promotions(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    versions = [reg.publish("snapshot", _src(tmp_path, f"s{i}", bytes([i]))) for i in range(4)]
    pointer = tmp_path / "reg" / "snapshot" / "CURRENT.json"
    stop = threading.Event()
    torn: list[str] = []

    def read_loop() -> None:
        while not stop.is_set():
            if pointer.exists():
                try:
                    json.loads(pointer.read_text())["version"]
                except (ValueError, KeyError) as e:  # a torn or partial write
                    torn.append(str(e))

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        workers = [
            threading.Thread(target=lambda v=v: [reg.promote("snapshot", v) for _ in range(15)]) for v in versions
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        stop.set()
        reader.join()
    assert torn == []
    assert reg.current("snapshot") in versions
    assert not list(pointer.parent.glob("*.tmp"))  # no temporaries left behind
    assert len(reg.pointer("snapshot")["history"]) <= 10  # type: ignore[index]


def test_unreadable_pointer_is_corrupt_not_a_crash(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.publish("index", _src(tmp_path, "s"), promote=True)
    (tmp_path / "reg" / "index" / "CURRENT.json").write_text("{trunc")
    with pytest.raises(CorruptArtifact, match="pointer"):
        reg.resolve_current("index")


def test_manifest_from_a_newer_minor_version_loads_and_a_newer_major_is_refused(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    v = reg.publish("adapter", _src(tmp_path, "a"))
    path = tmp_path / "reg" / "adapter" / v / "tandem-artifact.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "format_version": "1.7", "signed_by": "ci"}))
    assert reg.get("adapter", v).manifest.version == v  # unknown key dropped with a warning
    path.write_text(json.dumps({**data, "format_version": "2.0"}))
    with pytest.raises(CorruptArtifact, match="format 2.0"):
        reg.get("adapter", v)


def test_versions_published_within_one_second_are_listed_in_publish_order(registry: Registry, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Names used to be second-stamped with a random suffix: two snapshots in one second listed
    # in random order, and pruning "all but the newest" could delete the newest (seen in CI).
    from tandem.registry import store

    monkeypatch.setattr(store, "_last_stamp", "")
    published = [registry.publish("index", _src(tmp_path, f"s{i}", bytes([i]))) for i in range(12)]
    assert registry.versions("index") == published


def test_version_key_orders_old_and_new_names_by_time() -> None:
    from tandem.registry.store import version_key

    names = ["20261207T233225Z-00000000", "20261207T233224.500000Z-ffffffff", "20261207T233224Z-ffffffff",
             "20261207T233224.000001Z-00000000"]
    assert sorted(names, key=version_key) == [names[2], names[3], names[1], names[0]]


def test_a_clock_that_stands_still_still_gives_later_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from tandem.registry import store

    frozen = datetime(2026, 12, 7, 23, 32, 24, 999999, tzinfo=UTC)

    class Clock(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return frozen

    monkeypatch.setattr(store, "datetime", Clock)
    monkeypatch.setattr(store, "_last_stamp", "")
    names = [store._new_version() for _ in range(3)]
    assert [n.split("-")[0] for n in names] == ["20261207T233224.999999Z", "20261207T233225.000000Z",
                                                "20261207T233225.000001Z"]
    assert sorted(names, key=store.version_key) == names
