"""Adapter training mechanics on a micro model: reserved IDs, replay, EWC, artifact, loading.

Quality (fresh-item recall rising, old-item recall kept) needs a trained base and is pinned
by ``tests/e2e/test_adapter_ci.py``; here every step runs in a few seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tandem.catalog.item import Item  # noqa: E402
from tandem.errors import CorruptArtifact, InvalidInput  # noqa: E402
from tandem.generative.adapter_artifact import MANIFEST  # noqa: E402
from tandem_testing.model_fixtures import untrained_model_dir  # noqa: E402
from tandem.generative.retriever import GenerativeRetriever  # noqa: E402
from tandem_testing.tiny_catalog import tiny_catalog  # noqa: E402
from tandem.training.adapter import AdapterConfig, title_queries, train_adapter  # noqa: E402
from tandem.training.peft_methods import ADAPTER_WEIGHTS, PeftSpec  # noqa: E402

NEW_IDS = {"t21", "t22", "t23"}


def _config(**kw: object) -> AdapterConfig:
    base = {"peft": PeftSpec(rank=2, alpha=4), "epochs": 2, "batch_size": 16, "queries_per_item": 2,
            "eval_old_items": 8, "threads": 1, "device": "cpu", "precision": "fp32", "num_beams": 4}
    return AdapterConfig(**(base | kw))


@pytest.fixture(scope="module")
def items() -> tuple[list[Item], list[Item]]:
    cat = tiny_catalog()
    return [it for it in cat if it.item_id not in NEW_IDS], [it for it in cat if it.item_id in NEW_IDS]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory, items: tuple[list[Item], list[Item]]) -> Path:
    return untrained_model_dir(tmp_path_factory.mktemp("base") / "model", items[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, base_dir: Path,
            items: tuple[list[Item], list[Item]]) -> tuple[Path, dict]:
    old, new = items
    changed = old[0].model_copy(update={"title": old[0].title + " Pro Edition"})
    out = tmp_path_factory.mktemp("adapter") / "a1"
    config = _config(ewc_lambda=1.0, fisher_samples=8, distill=0.5)
    summary = train_adapter(base_dir, [*new, changed], old, out, config)
    return out, summary


def test_new_items_get_reserved_ids_and_old_ids_stay(trained: tuple[Path, dict], base_dir: Path) -> None:
    from tandem.ids import IdMap

    out, summary = trained
    base_map, ext = IdMap.load(str(base_dir / "idmap")), IdMap.load(str(out / "idmap"))
    assert ext.item_ids()[: len(base_map)] == base_map.item_ids()
    np.testing.assert_array_equal(ext.as_array()[: len(base_map)], base_map.as_array())
    assert set(ext.item_ids()[len(base_map):]) == NEW_IDS  # the changed item keeps its ID
    assert len({tuple(r) for r in ext.as_array().tolist()}) == len(ext)  # no ID shared
    assert ext.version == base_map.version + 1
    assert summary["new_items"] == 4 and summary["changed_items"] == 1
    assert summary["free_slots"] == base_map.free_slots() - len(NEW_IDS)


def test_summary_metrics_and_replay_share(trained: tuple[Path, dict]) -> None:
    out, summary = trained
    m = summary["metrics"]
    # Only the changed item could be found before the adapter: 1 of 4 at most.
    assert m["new_r10_before"] <= 0.25 and m["new_exact_match_before"] <= 0.25
    for key in ("new_r10", "old_r10", "old_r10_before", "forgetting", "old_exact_match"):
        assert key in m
    assert m["forgetting"] == pytest.approx(m["old_exact_match_before"] - m["old_exact_match"])
    first = summary["epochs"][0]
    # 20 % of each epoch's examples are replayed old items (rounded).
    assert first["replay"] == round(summary["examples_new"] * 0.2 / 0.8)
    assert "ewc_penalty" in first and first["distill_kl"] >= 0
    params = summary["parameters"]
    assert 0 < params["trainable"] < params["total"] * 0.2
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["metrics"] == pytest.approx(m)
    assert manifest["method"]["method"] == "lora" and manifest["new_items"] == 4


def test_base_plus_adapter_serves_the_extended_trie(trained: tuple[Path, dict], base_dir: Path) -> None:
    out, _ = trained
    base = GenerativeRetriever(base_dir, device="cpu", num_beams=4)
    both = GenerativeRetriever(base_dir, adapter=out, device="cpu", num_beams=4)
    assert len(both.artifact.id_map) == len(base.artifact.id_map) + len(NEW_IDS)
    assert both.version() != base.version() and "+" in both.version()
    # Beam wide enough to enumerate every leaf: new items are reachable, and only through the adapter.
    width = len(both.artifact.id_map)
    found = {h.item_id for h in both.retrieve(["anything at all"], width)[0]}
    assert NEW_IDS <= found
    assert not NEW_IDS & {h.item_id for h in base.retrieve(["anything at all"], len(base.artifact.id_map))[0]}
    # The merged weights differ from the base (the adapter learnt something non-zero).
    b, a = base.artifact.model.state_dict(), both.artifact.model.state_dict()
    assert any(not torch.equal(b[k], a[k]) for k in b)


def test_adapter_is_refused_on_another_base_or_when_tampered(trained: tuple[Path, dict], base_dir: Path, items,
                                                            tmp_path: Path) -> None:
    out, _ = trained
    other = untrained_model_dir(tmp_path / "other", items[0], seed=5)
    with pytest.raises(CorruptArtifact, match="trained on base weights"):
        GenerativeRetriever(other, adapter=out, device="cpu")
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    raw = bytearray((bad / ADAPTER_WEIGHTS).read_bytes())
    raw[-3] ^= 0xFF
    (bad / ADAPTER_WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(CorruptArtifact, match="checksum"):
        GenerativeRetriever(base_dir, adapter=bad, device="cpu")


def test_bad_requests(base_dir: Path, items, tmp_path: Path) -> None:
    old, new = items
    with pytest.raises(InvalidInput, match="`new_items`"):
        train_adapter(base_dir, [], old, tmp_path / "x", _config())
    with pytest.raises(InvalidInput, match="`peft.method`"):
        train_adapter(base_dir, new, old, tmp_path / "x", _config(peft=PeftSpec(method="prefix")))
    with pytest.raises(InvalidInput, match="`ewc_lambda`"):
        train_adapter(base_dir, new, old, tmp_path / "x", _config(peft=PeftSpec(method="ia3"), ewc_lambda=1.0))


def test_title_queries_are_deterministic_subsets() -> None:
    item = Item(item_id="x1", title="Volta Small Red Steel Drill")
    qs = title_queries(item, 6, seed=3)
    assert qs == title_queries(item, 6, seed=3)
    assert qs[0] == "volta small red steel drill" and len(set(qs)) == len(qs) == 6
    words = set(qs[0].split())
    assert all(set(q.split()) <= words for q in qs)
    assert title_queries(item, 0) == []


def test_lora_ewc_penalty_is_zero_at_start_and_grows_with_the_update() -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    from tandem.training.ewc import LoraEWC, fisher_diagonal
    from tandem.training.objectives import Example, Task
    from tandem.training.peft_methods import apply_peft

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                                num_decoder_layers=1, num_heads=2, pad_token_id=0,
                                                eos_token_id=1, decoder_start_token_id=0))
    examples = [Example(Task.DOC2ID, (5, 6, 7, 1), (10 + i, 1), i) for i in range(4)]
    fisher = fisher_diagonal(model, examples, 0, torch.device("cpu"), ["q", "v"])
    assert fisher and all(f.shape == model.get_parameter(k).shape for k, f in fisher.items())
    assert np.mean([float(f.mean()) for f in fisher.values()]) == pytest.approx(1.0, rel=1e-5)
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    peft_model = apply_peft(model, PeftSpec(rank=2, target_modules=("q", "v")))
    ewc = LoraEWC(peft_model, fisher, strength=2.0)
    assert float(ewc.penalty().detach()) == 0.0  # LoRA's B starts at zero: no change, no penalty
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.1)
    pen = ewc.penalty()
    assert float(pen.detach()) > 0
    pen.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_" in n)


def _jsonl(path: Path, rows: list[Item]) -> Path:
    path.write_text("".join(it.model_dump_json(exclude_none=True) + "\n" for it in rows))
    return path


def test_select_items_from_a_catalog_file(base_dir: Path, items, tmp_path: Path) -> None:
    from tandem.training.adapter import select_items

    old, new = items
    catalog = _jsonl(tmp_path / "catalog.jsonl", [*old, *new])
    got_new, got_old = select_items(base_dir, catalog=catalog)
    assert {it.item_id for it in got_new} == NEW_IDS  # what the base lacks
    assert {it.item_id for it in got_old} == {it.item_id for it in old}
    changed = _jsonl(tmp_path / "changed.jsonl", [old[0], new[0]])
    got_new, got_old = select_items(base_dir, catalog=catalog, new_items=changed)
    assert {it.item_id for it in got_new} == {old[0].item_id, new[0].item_id}
    assert old[0].item_id not in {it.item_id for it in got_old}
    with pytest.raises(InvalidInput, match="`--catalog` or `--store`"):
        select_items(base_dir)
    with pytest.raises(InvalidInput, match="`--since-version`"):
        select_items(base_dir, catalog=catalog, since_version=1)


def test_select_items_from_the_catalog_store(base_dir: Path, items, tmp_path: Path) -> None:
    from tandem.catalog.events import ItemEvent
    from tandem.streams.store import CatalogStore
    from tandem.training.adapter import select_items

    old, new = items

    def upsert(it: Item, version: int) -> ItemEvent:
        it = it.model_copy(update={"version": version})
        return ItemEvent(op="upsert", item_id=it.item_id, version=version, item=it)

    with CatalogStore(tmp_path / "store.db") as store:
        store.apply([upsert(it, 1) for it in old])
        snap = store.snapshot(tmp_path / "snap").snapshot_version
        store.apply([upsert(it, 1) for it in new] + [upsert(old[1], 2)])
    got_new, got_old = select_items(base_dir, store=tmp_path / "store.db", since_version=snap)
    assert {it.item_id for it in got_new} == NEW_IDS | {old[1].item_id}  # added + changed since the snapshot
    assert len(got_old) == len(old) - 1
    got_new, _ = select_items(base_dir, store=tmp_path / "store.db")
    assert {it.item_id for it in got_new} == NEW_IDS


def test_adapter_config_from_set_options() -> None:
    from tandem.training.adapter import adapter_config

    cfg = adapter_config({"epochs": 3, "peft.rank": 8, "peft.target_modules": ["q", "v"], "replay": 0.3})
    assert cfg.epochs == 3 and cfg.peft.rank == 8 and cfg.peft.target_modules == ("q", "v") and cfg.replay == 0.3
    assert cfg.replay_share("t5") == cfg.replay_share("tree") == 0.3  # an explicit share holds for both kinds
    default = adapter_config()
    assert default.replay is None and default.replay_share("t5") == 0.2  # v1: the chapter's 80/20
    assert default.replay_share("tree") == 0.35  # v2: the share measured to meet both fresh-item bars
    assert default.scope(corrective=False) == "items" and default.scope(corrective=True) == "decoder"
    assert adapter_config({"tree_scope": "decoder"}).scope(corrective=False) == "decoder"
    with pytest.raises(InvalidInput, match="`replay`"):
        adapter_config({"replay": 1.0})
    with pytest.raises(InvalidInput, match="`peft.rank`"):
        adapter_config({"peft.rank": 0})
    with pytest.raises(InvalidInput, match="`nope`"):
        adapter_config({"nope": 1})
    with pytest.raises(InvalidInput, match="`ewc.x`"):
        adapter_config({"ewc.x": 1})


def test_cli_reports_bad_options_clearly(base_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tandem_app.cli import app

    res = CliRunner().invoke(app, ["train", "adapter", "--base", str(base_dir), "--out", str(tmp_path / "a")])
    assert res.exit_code == 2 and "`--catalog` or `--store`" in res.output
    res = CliRunner().invoke(app, ["train", "adapter", "--base", str(base_dir), "--out", str(tmp_path / "a"),
                                   "--catalog", "x.jsonl", "--replay", "1.5"])
    assert res.exit_code == 2 and "`replay`" in res.output
    res = CliRunner().invoke(app, ["train", "adapter", "--out", str(tmp_path / "a"), "--catalog", "x.jsonl"])
    assert res.exit_code == 2 and "`--base`" in res.output


def test_pseudo_query_sources_drop_too_short_queries() -> None:
    from tandem.training.adapter import pseudo_query_source

    item = Item(item_id="x2", title="Maplecrest 12 In Yellow Copper Hose", brand="Maplecrest")
    fn, name = pseudo_query_source("title", min_words=3)
    qs = fn(item, 5, 0)
    assert len(qs) == 5 and all(len(q.split()) >= 3 for q in qs) and "3 words" in name
    template, name = pseudo_query_source("template", min_words=2)
    if name.startswith("pseudo.template_queries"):  # the pseudo-query module is part of this build
        qs = template(item, 4, 0)
        assert qs and all(len(q.split()) >= 2 for q in qs)
    unfiltered, _ = pseudo_query_source("title", min_words=1)
    assert unfiltered(item, 3, 0) == title_queries(item, 3, 0)
