"""A corrupt ``current`` model falls back to the last good one at start-up too (issue 19):
:class:`ServingRegistry` names the version ``resolve_current`` would serve, and the generative
service that follows a registry starts on it, with a log line, instead of failing to start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tandem.errors import CorruptArtifact
from tandem.registry import ArtifactKind, Registry
from tandem.registry.serving import ServingRegistry
from tandem.registry.store import CORRUPT


def _src(tmp_path: Path, name: str, payload: bytes) -> Path:
    src = tmp_path / name
    src.mkdir()
    (src / "model.bin").write_bytes(payload)
    return src


def _corrupt(reg: Registry, kind: ArtifactKind, version: str, rel: str = "model.bin") -> None:
    reg.fs.pipe_file(f"{reg.root}/{kind.value}/{version}/{rel}", b"bit rot")


def _refused() -> float:
    return CORRUPT.labels(ArtifactKind.ADAPTER.value)._value.get()


def test_current_names_the_last_good_version_and_logs_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reg = Registry(tmp_path / "reg")
    v1 = reg.publish(ArtifactKind.ADAPTER, _src(tmp_path, "a1", b"one"), promote=True)
    v2 = reg.publish(ArtifactKind.ADAPTER, _src(tmp_path, "a2", b"two"), promote=True)
    serving = ServingRegistry(tmp_path / "reg")
    assert serving.current(ArtifactKind.ADAPTER) == v2
    _corrupt(reg, ArtifactKind.ADAPTER, v2)
    v3 = reg.publish(ArtifactKind.ADAPTER, _src(tmp_path, "a3", b"three"), promote=True)
    _corrupt(reg, ArtifactKind.ADAPTER, v3)
    before = _refused()
    with caplog.at_level(logging.ERROR):
        assert serving.current("adapter") == v1
    assert any("corrupt; serving the previous good version" in r.getMessage() and v1 in r.getMessage()
               for r in caplog.records)
    assert _refused() == before + 2
    # Remembered per pointer: polling does not re-verify (nor re-count) until the pointer moves.
    assert serving.current(ArtifactKind.ADAPTER) == v1 and _refused() == before + 2
    assert reg.current(ArtifactKind.ADAPTER) == v3, "the plain registry still names the pointer's version"
    assert ServingRegistry(tmp_path / "reg").current(ArtifactKind.BASE_MODEL) is None


def test_with_nothing_good_current_names_the_pointer_so_loading_it_fails(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    v1 = reg.publish(ArtifactKind.ADAPTER, _src(tmp_path, "a1", b"one"), promote=True)
    _corrupt(reg, ArtifactKind.ADAPTER, v1)
    serving = ServingRegistry(tmp_path / "reg")
    assert serving.current(ArtifactKind.ADAPTER) == v1
    with pytest.raises(CorruptArtifact):
        serving.get(ArtifactKind.ADAPTER, v1)


def test_the_generative_service_starts_on_the_last_good_base(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("torch")
    from tandem_testing.model_fixtures import untrained_model_dir
    from tandem_testing.tiny_catalog import tiny_catalog
    from tandem_services.app import load_generative

    items = tiny_catalog()[:8]
    reg = Registry(tmp_path / "reg")
    good = reg.publish(ArtifactKind.BASE_MODEL, untrained_model_dir(tmp_path / "b1", items), promote=True)
    bad = reg.publish(ArtifactKind.BASE_MODEL, untrained_model_dir(tmp_path / "b2", items, seed=7), promote=True)
    manifest = reg.get(ArtifactKind.BASE_MODEL, bad).manifest
    _corrupt(reg, ArtifactKind.BASE_MODEL, bad, sorted(manifest.files)[0])
    with caplog.at_level(logging.ERROR):
        retriever = load_generative(None, None, registry=str(tmp_path / "reg"), poll_s=60)
    try:
        assert retriever.version().startswith(f"base-model:{good}")
        assert retriever.retrieve(["cordless drill"], 3)[0]
        assert any(f"serving the previous good version {good}" in r.getMessage() for r in caplog.records)
    finally:
        retriever.close()
