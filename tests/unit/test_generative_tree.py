"""Generative retriever v2: ID tree, decoding, training, the model folder, new items and adapters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tandem.errors import CorruptArtifact, InvalidInput
from tandem.generative.tree_decoding import TreeIndex, forced_log_probs, prf_rescore, tree_beam_search
from tandem.generative.tree_model import TreeDecoder
from tandem_testing.tiny_catalog import tiny_catalog

HELD_OUT = ("t07", "t17", "t22")  # arrive later, through an adapter


def test_tree_index_paths_children_and_add() -> None:
    codes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]])
    index = TreeIndex(codes)
    assert index.nodes_per_position == [2, 3, 4]
    assert index.paths.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]]
    level1, items = index.tables()
    assert sorted(level1[0].tolist()) == [0, 1] and level1[1].tolist()[0] == 2
    row = index.add([0, 1, 1])
    assert row == 4 and index.tables()[1][1].tolist() == [2, 4]
    with pytest.raises(InvalidInput, match="prefix"):
        index.add([5, 0, 0])
    with pytest.raises(InvalidInput):
        TreeIndex(np.zeros((0, 3)))


def test_untrained_decoder_with_full_beams_is_exact_dense_search() -> None:
    """At init (zero correction) and beams covering every node, decoding ranks items exactly
    by the pooled query's dot product with their embeddings: the dense-retrieval start."""
    rng = np.random.default_rng(0)
    codes = np.array([[a, b, c] for a in range(3) for b in range(3) for c in range(4)])
    vecs = rng.normal(size=(len(codes), 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = TreeIndex(codes)
    model = TreeDecoder(16, index.nodes_per_position)
    with torch.no_grad():
        for p, table in enumerate(index.member_means(vecs)):
            model.nodes[p].copy_(torch.from_numpy(table))
    q = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    states, mask = torch.randn(5, 4, 16), torch.ones(5, 4, dtype=torch.long)
    nodes, scores = tree_beam_search(model.eval(), index, q, states, mask, beams=[3, 9, 10])
    expect = (q @ torch.from_numpy(vecs).T).topk(10).indices
    assert nodes.tolist() == expect.tolist()
    assert torch.all(scores[:, :-1] >= scores[:, 1:])


def test_feedback_moves_up_items_like_the_top_hits_and_keeps_the_beam() -> None:
    """Rocchio feedback: an item close to the query's best hits overtakes one that only
    matched the query a little better; no item leaves or joins the beam; off = unchanged."""
    vecs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.0, 0.44], [0.0, 0.0, 1.0]])
    model = TreeDecoder(3, [1, 4])
    with torch.no_grad():
        model.nodes[-1].copy_(vecs)
    nodes = torch.tensor([[0, 1, 2, -1]])
    scores = torch.tensor([[3.0, 2.0, 1.9, float("-inf")]])
    assert prf_rescore(model, nodes, scores, docs=1, weight=0.0)[0].tolist() == nodes.tolist()
    new_nodes, new_scores = prf_rescore(model, nodes, scores, docs=1, weight=0.5)
    assert new_nodes.tolist() == [[0, 2, 1, -1]]
    assert torch.all(new_scores[0, :2] >= new_scores[0, 1:3])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tandem.training.tree_config import tree_profile
    from tandem.training.tree_run import train_tree

    items = [it for it in tiny_catalog() if it.item_id not in HELD_OUT]
    pairs = [("cordless drill", "t01"), ("hammer drill", "t02"), ("paint roller", "t13"), ("lawn mower", "t20"),
             ("kitchen faucet", "t21"), ("wood screws", "t24")]
    out = tmp_path_factory.mktemp("tree") / "model"
    cfg = tree_profile("ci", memorise_epochs=2, align_epochs=2, lora_epochs=1, batch_size=8, lora_batch_size=8)
    summary = train_tree(items, pairs, out, cfg, dev=({"q1": "drill"}, {"q1": {"t01": 4, "t02": 4}}), echo=print)
    assert list(summary["stages"]) == ["init", "memorise", "align", "encoder"]
    assert summary["encoder_changed"] and summary["stages"]["init"]["dev"]["r@10"] == 1.0
    assert summary["final_memorisation"]["exact_match"] >= 0.9
    return out


def test_trained_folder_serves_titles_and_queries(trained: Path) -> None:
    from tandem.generative import load_retriever
    from tandem.generative.tree_retriever import TreeRetriever

    r = load_retriever(trained, num_beams=5, normalize="full")  # v1's option is ignored, not an error
    assert isinstance(r, TreeRetriever)
    titles = {it.item_id: it.title for it in tiny_catalog() if it.item_id not in HELD_OUT}
    hits = r.retrieve(list(titles.values()), 3)
    top1 = [h[0].item_id for h in hits]
    assert np.mean([a == b for a, b in zip(top1, titles)]) >= 0.9
    assert all(len(h) == 3 and h[0].score >= h[1].score for h in hits)
    assert r.retrieve(["garden hose"], 1)[0][0].item_id == "t18"
    with pytest.raises(InvalidInput):
        r.retrieve(["drill"], 0)
    assert r.version().startswith("1-")
    fb = load_retriever(trained, num_beams=5, prf_docs="2", prf_weight="0.3", prf_pool="8")  # CLI strings
    got = fb.retrieve(list(titles.values()), 3)
    assert all(len(h) == 3 and h[0].score >= h[1].score >= h[2].score for h in got)
    assert np.mean([h[0].item_id == t for h, t in zip(got, titles)]) >= 0.9
    with pytest.raises(InvalidInput, match="prf_weight"):
        load_retriever(trained, prf_docs=2, prf_weight=-1)


def test_scores_any_item_for_fusion(trained: Path) -> None:
    from tandem.generative.tree_retriever import TreeRetriever
    from tandem.retriever import MAX_SCORED_ITEMS

    r = TreeRetriever(trained, num_beams=5, device="cpu")
    ids = ["t01", "t18", "nope", "t13"]
    got = r.score_items("garden hose", ids)
    assert got[2] is None and all(len(v) == 2 for v in (got[0], got[1], got[3]))
    (lp_drill, cos_drill), (lp_hose, cos_hose) = got[0], got[1]
    assert lp_hose > lp_drill and cos_hose > cos_drill and lp_hose <= 0.0 and -1.0 <= cos_drill <= 1.0
    assert r.retrieve(["garden hose"], 1)[0][0].item_id == "t18"  # agrees with decoding
    again = r.score_items("garden hose", ids)  # the encoding remembered from retrieve(): same scores
    assert again[2] is None and all(a == pytest.approx(b, abs=1e-4) for a, b in zip(again[:2], got[:2]))
    with pytest.raises(InvalidInput, match="query"):
        r.score_items("  ", ids)
    with pytest.raises(InvalidInput, match="at most"):
        r.score_items("hose", ["t01"] * (MAX_SCORED_ITEMS + 1))


def test_new_items_are_findable_at_assignment(trained: Path) -> None:
    from tandem.generative.tree_retriever import TreeRetriever

    r = TreeRetriever(trained, num_beams=5, device="cpu")
    new = [it for it in tiny_catalog() if it.item_id in HELD_OUT]
    r.retrieve(["drill"], 3)  # its per-level normalisers are remembered for item scores...
    codes = r.add_items(new)
    assert set(codes) == set(HELD_OUT)
    hits = r.retrieve([it.title for it in new], 3)
    assert [h[0].item_id for h in hits] == list(HELD_OUT)
    assert r.add_items(new) == codes  # replaying the same event changes nothing
    assert all(v is not None for v in r.score_items("drill", list(HELD_OUT)))  # and scorable at once
    # ...and dropped by add_items: the item level's softmax now spans the new items too
    enc, art = r._encoded("drill"), r.artifact
    fresh = forced_log_probs(art.model, art.index, enc.q, enc.states, enc.mask, torch.tensor([0, len(r._item_ids) - 1]))
    got = r.score_items("drill", [r._item_ids[0], r._item_ids[-1]])
    assert [v[0] for v in got] == pytest.approx(fresh.tolist(), abs=1e-5)


def _rehash(folder: Path) -> None:
    from tandem.versioned import sha256_file

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = {name: sha256_file(folder / name) for name in manifest["files"] if (folder / name).is_file()}
    manifest["files"] |= {p.relative_to(folder).as_posix(): sha256_file(p) for p in (folder / "idmap").iterdir()}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_folder_with_another_encoders_ids_is_refused(trained: Path, tmp_path: Path) -> None:
    from tandem.generative.tree_artifact import load_tree_model
    from tandem.ids import build_semantic_ids
    from tandem.ids.config import SemanticIdConfig

    copy = tmp_path / "m"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("cache"))
    shutil.rmtree(copy / "idmap")
    items = [it for it in tiny_catalog() if it.item_id not in HELD_OUT]
    build_semantic_ids(items, SemanticIdConfig(levels=2, branching=2, use_categories=False)).save(str(copy / "idmap"))
    _rehash(copy)
    with pytest.raises(CorruptArtifact, match="another encoder"):
        load_tree_model(copy)
    (copy / "decoder.safetensors").write_bytes(b"x")
    with pytest.raises(CorruptArtifact, match="checksum"):
        load_tree_model(copy)


def test_adapter_adds_items_and_is_refused_on_another_base(trained: Path, tmp_path: Path) -> None:
    from tandem.generative.tree_retriever import TreeRetriever
    from tandem.training.adapter import adapter_config, train_adapter

    items = tiny_catalog()
    new = [it for it in items if it.item_id in HELD_OUT]
    old = [it for it in items if it.item_id not in HELD_OUT]
    out = tmp_path / "adapter"
    summary = train_adapter(trained, new, old, out, adapter_config({"tree_epochs": 5, "batch_size": 8}))
    m = summary["metrics"]
    assert summary["kind"] == "tree" and m["new_r10_before"] == 0.0
    assert m["new_r10_assigned"] >= 2 / 3 and m["new_r10"] >= 2 / 3 and m["forgetting"] <= 0.1
    r = TreeRetriever(trained, adapter=out, num_beams=5, device="cpu")
    assert [h[0].item_id for h in r.retrieve([it.title for it in new], 3)] == list(HELD_OUT)
    assert "+" in r.version()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["base"]["decoder_sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptArtifact, match="another base"):
        TreeRetriever(trained, adapter=out, device="cpu")


def test_items_scope_adapter_leaves_every_old_score_as_the_base_s(trained: Path, tmp_path: Path) -> None:
    """``tree_scope=items`` trains the new rows only: old items' scores for any query are the base's."""
    from tandem.generative.tree_retriever import TreeRetriever
    from tandem.training.adapter import adapter_config, train_adapter

    items = tiny_catalog()
    new = [it for it in items if it.item_id in HELD_OUT]
    old = [it for it in items if it.item_id not in HELD_OUT]
    out = tmp_path / "adapter"
    summary = train_adapter(trained, new, old, out, adapter_config({"tree_epochs": 3, "batch_size": 8,
                                                                    "tree_scope": "items"}))
    assert summary["parameters"]["trainable"] == len(new) * 384
    # the model's own item scores (feedback off: it re-ranks around the top hits, new ones included)
    base = TreeRetriever(trained, num_beams=5, device="cpu", prf_docs=0)
    adapted = TreeRetriever(trained, adapter=out, num_beams=5, device="cpu", prf_docs=0)
    old_ids = {it.item_id for it in old}
    for query in ("cordless drill", "paint roller", "garden hose"):
        before = {h.item_id: h.score for h in base.retrieve([query], 10)[0]}
        after = {h.item_id: h.score for h in adapted.retrieve([query], 10 + len(new))[0] if h.item_id in old_ids}
        assert before == pytest.approx({i: after[i] for i in before}, abs=1e-5)
        cos_before = [s[1] for s in base.score_items(query, sorted(old_ids))]  # type: ignore[index]
        cos_after = [s[1] for s in adapted.score_items(query, sorted(old_ids))]  # type: ignore[index]
        assert cos_before == pytest.approx(cos_after, abs=1e-5)
    assert [h[0].item_id for h in adapted.retrieve([it.title for it in new], 3)] == list(HELD_OUT)


def test_total_minutes_keeps_room_for_what_follows_training(tmp_path: Path) -> None:
    """With a whole-run target already spent by encoding, no stage trains, yet the run ends
    with its final check and a servable folder (the ``full`` profile's 45-minute guarantee)."""
    from tandem.training.tree_config import tree_profile
    from tandem.training.tree_run import train_tree

    items = [it for it in tiny_catalog() if it.item_id not in HELD_OUT]
    cfg = tree_profile("ci", total_minutes=0.01, lora_epochs=1)
    summary = train_tree(items, [("cordless drill", "t01")], tmp_path / "m", cfg, cache_dir=tmp_path / "c",
                         echo=lambda _: None)
    assert list(summary["stages"]) == ["init"] and not summary["encoder_changed"]
    assert summary["final_memorisation"]["items_checked"] == len(items)
    assert (tmp_path / "m" / "training_summary.json").is_file()
    assert tree_profile("full").total_minutes == 45.0


def test_base_keeps_its_training_queries_and_adapters_replay_them(trained: Path, tmp_path: Path) -> None:
    """The folder keeps (query, item) training pairs; ``replay_source=queries`` replays them
    (old items only) instead of title pseudo-queries; a malformed file is refused."""
    from tandem.generative.tree_artifact import REPLAY_FILE, read_replay_queries
    from tandem.training.adapter import adapter_config, train_adapter

    kept = read_replay_queries(trained)
    assert ("cordless drill", "t01") in kept and len(kept) == 6
    items = tiny_catalog()
    new = [it for it in items if it.item_id in HELD_OUT]
    old = [it for it in items if it.item_id not in HELD_OUT]
    cfg = {"tree_epochs": 1, "batch_size": 8, "replay": 0.5}
    real = train_adapter(trained, new, old, tmp_path / "q", adapter_config(cfg))  # the default: real queries
    pseudo = train_adapter(trained, new, old, tmp_path / "p", adapter_config({**cfg, "replay_source": "pseudo"}))
    assert real["replay_queries"] == 6 and pseudo["replay_queries"] == 0
    assert real["scope"] == "items" and real["replay"] == 0.5  # no corrective pairs: `auto` = items
    n_old = pseudo["replay_pool"]  # half titles, the rest real queries (all 6 kept ones fit)
    assert n_old > 12 and real["replay_pool"] == n_old // 2 + 6
    copy = tmp_path / "bad"
    shutil.copytree(trained, copy)
    (copy / REPLAY_FILE).write_text("no tab here\n")
    with pytest.raises(CorruptArtifact, match="query<TAB>item id"):
        read_replay_queries(copy)
