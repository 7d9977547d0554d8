"""Model folders: round trip, checksums, pickle refusal, version handling, retriever input checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tandem.errors import CorruptArtifact, InvalidInput, NotFound
from tandem.generative.artifacts import MANIFEST, load_artifact
from tandem_testing.model_fixtures import untrained_model_dir
from tandem_testing.tiny_catalog import tiny_catalog


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_model_dir(tmp_path_factory.mktemp("gen") / "model", tiny_catalog())


@pytest.fixture
def copy(model_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(model_dir, dst)
    return dst


def test_round_trip(model_dir: Path) -> None:
    art = load_artifact(model_dir)
    assert len(art.id_map) == 24 and art.max_input_length == 16
    manifest = json.loads((model_dir / MANIFEST).read_text())
    assert manifest["format_version"] == "1.0"
    assert manifest["tokenizer"]["id_space"] == list(art.tokenizer.id_space)
    assert manifest["id_map"]["version"] == str(art.id_map.version)
    assert {"model.safetensors", "tokenizer.json", "idmap/idmap.json"} <= set(manifest["files"])
    assert not art.model.training


def test_flipped_byte_in_weights_is_refused(copy: Path) -> None:
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifact, match="model.safetensors.*checksum"):
        load_artifact(copy)


def test_truncated_idmap_is_refused(copy: Path) -> None:
    path = copy / "idmap" / "idmap.json"
    path.write_text(path.read_text()[:50])
    with pytest.raises(CorruptArtifact, match="idmap/idmap.json"):
        load_artifact(copy)


def test_pickle_weights_are_refused(copy: Path) -> None:
    (copy / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CorruptArtifact, match="pickle"):
        load_artifact(copy)


def test_missing_or_bad_manifest(copy: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_artifact(tmp_path / "nope")
    (copy / MANIFEST).write_text("{not json")
    with pytest.raises(CorruptArtifact, match="not valid JSON"):
        load_artifact(copy)
    (copy / MANIFEST).unlink()
    with pytest.raises(CorruptArtifact, match="no manifest.json"):
        load_artifact(copy)


def test_newer_minor_loads_newer_major_is_refused(copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest.update(format_version="1.7", future_field={"x": 1})
    (copy / MANIFEST).write_text(json.dumps(manifest))
    assert load_artifact(copy).manifest.get("future_field") is None
    assert "future_field" in caplog.text
    manifest["format_version"] = "2.0"
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CorruptArtifact, match="format_version"):
        load_artifact(copy)


def test_retriever_input_handling(model_dir: Path) -> None:
    from tandem.generative.retriever import GenerativeRetriever

    r = GenerativeRetriever(model_dir, num_beams=4)
    with pytest.raises(InvalidInput, match=r"`queries\[0\]`"):
        r.retrieve([""], 3)
    with pytest.raises(InvalidInput, match="`k`"):
        r.retrieve(["drill"], 0)
    # A query far over the model limit is truncated (documented), not an error.
    hits = r.retrieve(["cordless drill " * 500], 3)
    assert r.truncated == 1 and len(hits[0]) == 3
    # k above the beam floor widens the beam: k distinct items come back.
    wide = r.retrieve(["drill"], 12)[0]
    assert len({h.item_id for h in wide}) == 12
    assert all(h.score <= 0 for h in wide)  # log-probabilities
    with pytest.raises(InvalidInput, match="`num_beams`"):
        GenerativeRetriever(model_dir, num_beams=0)
    r.close()
    r.close()


def test_eval_factory_needs_a_model() -> None:
    from types import SimpleNamespace

    from tandem.generative.loading import generative_system

    with pytest.raises(InvalidInput, match="`--model`"):
        generative_system(SimpleNamespace(model=None, options={}))
