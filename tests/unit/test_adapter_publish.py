"""publish_adapter: resolve → train → gate → publish, with the training step faked (the trainers have their own tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tandem.errors import InvalidInput
from tandem.registry import ArtifactKind, Registry
from tandem.training import adapter_publish
from tandem.training.adapter import AdapterConfig
from tandem.training.adapter_metrics import AdapterMetrics


def _fake_train(forgetting: float) -> Any:
    def train(base: Path, new: list[Any], old: list[Any], out: Path, config: AdapterConfig, **kw: Any) -> dict[str, Any]:
        out.mkdir(parents=True)
        (out / "adapter.txt").write_text(f"trained on {base.name} for {kw['base_ref'] or 'no registry base'}")
        m = AdapterMetrics(k=config.eval_k, new_recall=0.9, new_recall_before=0.0, new_exact_match=1.0,
                           new_exact_match_before=0.0, old_recall=0.9, old_recall_before=0.9,
                           old_exact_match=0.95 - forgetting, old_exact_match_before=0.95)
        return {"metrics": m.as_dict(), "config": config.model_dump(mode="json")}
    return train


@pytest.mark.parametrize(("forgetting", "promoted"), [(0.0, True), (0.2, False)])
def test_the_registry_base_is_trained_on_gated_and_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             forgetting: float, promoted: bool) -> None:
    reg = Registry(str(tmp_path / "registry"))
    base = tmp_path / "base"
    base.mkdir()
    (base / "weights.txt").write_text("base")
    base_v = reg.publish(ArtifactKind.BASE_MODEL, base, promote=True)
    monkeypatch.setattr(adapter_publish, "train_adapter", _fake_train(forgetting))
    seen: list[Path] = []

    def select(base_dir: Path) -> tuple[list[Any], list[Any]]:
        seen.append(base_dir)
        return [], []

    out = tmp_path / "adapter"
    summary = adapter_publish.publish_adapter(out, select, AdapterConfig(), registry=str(tmp_path / "registry"),
                                              max_forgetting=0.05, echo=lambda _m: None)
    assert (seen[0] / "weights.txt").read_text() == "base"
    published = summary["registry"]
    assert published["promoted"] is promoted and (reg.current(ArtifactKind.ADAPTER) is not None) is promoted
    manifest = reg.manifest(ArtifactKind.ADAPTER, published["version"])
    assert manifest.metrics["promoted"] == float(promoted) and manifest.metrics["forgetting"] == pytest.approx(forgetting)
    assert manifest.parents == [f"base-model:{base_v}"]
    assert json.loads((tmp_path / "adapter.promotion.json").read_text())["promote"] is promoted


def test_without_a_base_or_a_current_one_it_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="`--base` is required"):
        adapter_publish.publish_adapter(tmp_path / "a", lambda b: ([], []), AdapterConfig())
    with pytest.raises(InvalidInput, match="no current base-model"):
        adapter_publish.publish_adapter(tmp_path / "a", lambda b: ([], []), AdapterConfig(),
                                        registry=str(tmp_path / "empty"))
