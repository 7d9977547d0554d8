"""Sharded generative serving: shard specs, the fan-out/merge composite and tree shards."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from tandem.errors import InvalidInput
from tandem.generative.sharding import ShardedRetriever, merge_hits, parse_shard, shard_of_code
from tandem.generative.tree_decoding import TreeIndex, tree_beam_search
from tandem.generative.tree_model import TreeDecoder
from tandem.generative.tree_shards import SharedEncodings, ShardTreeIndex, shard_rows, shard_view
from tandem.retriever import Hit, Retriever


class Fixed(Retriever):
    """A shard answering fixed hits, recording the queries it was asked."""

    score_names = ("s",)

    def __init__(self, hits: dict[str, float], fail: bool = False) -> None:
        self.hits, self.fail, self.asked = hits, fail, []
        self.name = "shard"

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        self.asked.append(list(queries))
        if self.fail:
            raise RuntimeError("shard down")
        top = sorted(self.hits.items(), key=lambda kv: -kv[1])[:k]
        return [[Hit(i, s, self.name) for i, s in top] for _ in queries]

    def score_items(self, query: str, item_ids: Sequence[str]) -> list[tuple[float, ...] | None]:
        return [(self.hits[i],) if i in self.hits else None for i in item_ids]

    def version(self) -> str:
        return f"v{len(self.hits)}"


def test_parse_shard_and_code_assignment() -> None:
    assert parse_shard("0/1") == (0, 1) and parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0", "1/2/3"):
        with pytest.raises(InvalidInput, match="shard"):
            parse_shard(bad)
    assert [shard_of_code(c, 3) for c in range(6)] == [0, 1, 2, 0, 1, 2]


def test_fan_out_merges_by_score_and_routes() -> None:
    a, b = Fixed({"x": 3.0, "y": 1.0}), Fixed({"z": 2.0, "y": 1.5})
    r = ShardedRetriever([a, b], name="generative")
    hits = r.retrieve(["q1", "q2"], 3)
    assert [[h.item_id for h in row] for row in hits] == [["x", "z", "y"]] * 2
    assert hits[0][2].score == 1.5 and {h.source for h in hits[0]} == {"generative"}
    assert r.score_items("q", ["y", "z", "nope"]) == [(1.0,), (2.0,), None]
    assert r.version() == "v2|v2" and r.score_names == ("s",)
    routed = ShardedRetriever([a, b], router=lambda qs: [{0}, {1}])
    assert [[h.item_id for h in row] for row in routed.retrieve(["only-a", "only-b"], 1)] == [["x"], ["z"]]
    assert a.asked[-1] == ["only-a"] and b.asked[-1] == ["only-b"]
    with pytest.raises(RuntimeError, match="shard down"):
        ShardedRetriever([a, Fixed({}, fail=True)]).retrieve(["q"], 2)
    with pytest.raises(InvalidInput):
        ShardedRetriever([])
    single = ShardedRetriever([a])
    assert single.version() == "v2" and [h.item_id for h in single.retrieve(["q"], 1)[0]] == ["x"]


def test_merge_keeps_each_item_once_at_its_best() -> None:
    merged = merge_hits([[Hit("a", 1.0, "s"), Hit("b", 0.5, "s")], [Hit("a", 2.0, "s")]], 5, "g")
    assert [(h.item_id, h.score) for h in merged] == [("a", 2.0), ("b", 0.5)]


def test_merge_breaks_equal_scores_by_item_id() -> None:
    merged = merge_hits([[Hit("d", 1.0, "s"), Hit("c", 1.0, "s")], [Hit("b", 1.0, "s"), Hit("a", 0.5, "s")]], 2, "g")
    assert [h.item_id for h in merged] == ["b", "c"]


def _tree(seed: int = 0) -> tuple[np.ndarray, TreeIndex, TreeDecoder]:
    """5 top codes x 3 sub-clusters x 4 items, the decoder at its dense start (random unit item vectors)."""
    codes = np.array([[a, b, c] for a in range(5) for b in range(3) for c in range(4)])
    index = TreeIndex(codes)
    vecs = torch.nn.functional.normalize(torch.randn(len(codes), 16, generator=torch.Generator().manual_seed(seed)), dim=-1)
    model = TreeDecoder(16, index.nodes_per_position).eval()
    with torch.no_grad():
        for param, table in zip(model.nodes, index.member_means(vecs.numpy()), strict=True):
            param.copy_(torch.from_numpy(table))
    return codes, index, model


def test_shard_index_keeps_the_cluster_levels_and_only_its_items() -> None:
    codes, index, _ = _tree()
    rows = shard_rows(codes, 1, 2)
    assert set(codes[rows, 0].tolist()) == {1, 3}
    sub = ShardTreeIndex(codes, rows, index)
    assert sub.nodes_per_position == [5, 15, len(rows)]
    tables = sub.tables()
    assert all(torch.equal(a, b) for a, b in zip(tables[:-1], index.tables()[:-1], strict=True))  # clusters: all
    leaf_children = tables[-1]
    assert (leaf_children[0] < 0).all() and (leaf_children[3] >= 0).all()  # leaf 0 is under code 0: shard 0's
    assert (sub.node_maps[2] == rows).all() and (index.paths[rows, :2] == sub.paths[:, :2]).all()
    added = sub.add((3, 1, 9))  # a new item under an existing leaf of this shard
    assert added == len(rows) and sub.tables()[-1][sub.paths[added, 1]].tolist().count(added) == 1
    assert len(index.paths) == len(codes)  # the full tree is untouched
    with pytest.raises(InvalidInput, match="no items"):
        ShardTreeIndex(codes, rows[:0], index)


@pytest.mark.parametrize("rank", ["last", "path"])
@pytest.mark.parametrize("beams", [[5, 15, 10], [2, 4, 10]])
def test_merged_shards_return_the_unsharded_top_k(rank: str, beams: list[int]) -> None:
    """N shards merged give exactly one model's ranking, also when the cluster beams prune
    (``[2, 4, 10]`` keeps 2 of 5 top codes and 4 of 15 leaves): every shard's cluster beam is
    the unsharded one, so its item candidates are its share of one model's."""
    codes, index, model = _tree(1)
    q = torch.nn.functional.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(2)), dim=-1)
    states, mask = torch.randn(6, 4, 16, generator=torch.Generator().manual_seed(3)), torch.ones(6, 4, dtype=torch.long)
    one_nodes, one_scores = tree_beam_search(model, index, q, states, mask, beams=beams, rank=rank)
    for n in (1, 2, 3):
        parts = []
        for s in range(n):
            view, sub, rows = shard_view(model, index, codes, s, n)
            nodes, scores = tree_beam_search(view, sub, q, states, mask, beams=beams, rank=rank)
            parts.append([[Hit(str(rows[x]), float(v), "g") for x, v in zip(rn, rs) if x >= 0]
                          for rn, rs in zip(nodes.tolist(), scores.tolist())])
        for i in range(len(q)):
            want = [x for x in one_nodes[i].tolist() if x >= 0]
            merged = merge_hits([p[i] for p in parts], len(want), "g")
            assert [int(h.item_id) for h in merged] == want
            assert np.allclose([h.score for h in merged], one_scores[i][: len(want)].tolist(), atol=1e-5)
    assert model.nodes[2].shape[0] == len(codes)  # views never touch the shared model's tables


def test_shared_encodings_compute_a_batch_once() -> None:
    calls = []

    def encode(qs: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        calls.append(list(qs))
        return torch.zeros(1), torch.zeros(1), torch.zeros(1)

    shared = SharedEncodings(capacity=2)
    first = shared.get(["a"], encode)
    assert shared.get(["a"], encode) is first and calls == [["a"]]
    shared.get(["b"], encode), shared.get(["c"], encode), shared.get(["a"], encode)
    assert calls == [["a"], ["b"], ["c"], ["a"]]  # bounded: "a" was evicted


@pytest.fixture(scope="module")
def untrained_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A v2 folder at initialisation (no training epochs: the encoder's dense start)."""
    from tandem_testing.tiny_catalog import tiny_catalog
    from tandem.training.tree_config import tree_profile
    from tandem.training.tree_run import train_tree

    out = tmp_path_factory.mktemp("shards") / "model"
    cfg = tree_profile("ci", memorise_epochs=0, align_epochs=0, lora_epochs=0, branching=4)
    train_tree(list(tiny_catalog()), [("cordless drill", "t01")], out, cfg,
               cache_dir=tmp_path_factory.mktemp("cache"), echo=lambda _: None)
    return out


def test_sharded_folder_serves_what_one_model_serves(untrained_folder: Path) -> None:
    from tandem.generative.tree_retriever import open_tree_retriever
    from tandem.generative.tree_shards import ShardTreeRetriever, open_shard_retriever, open_sharded_tree_retriever

    queries = ["cordless drill", "paint roller", "garden hose", "kitchen faucet"]
    one = open_tree_retriever(untrained_folder, num_beams=10, prf_docs=0)  # shards serve without feedback
    want = [[h.item_id for h in hs] for hs in one.retrieve(queries, 5)]
    two = open_sharded_tree_retriever(untrained_folder, 2, num_beams=10)
    assert isinstance(two, ShardedRetriever)
    got = [[h.item_id for h in hs] for hs in two.retrieve(queries, 5)]
    assert got == want
    owned = [set(s._item_ids) for s in two.shards]  # noqa: SLF001 - the partition is the point
    assert not owned[0] & owned[1] and owned[0] | owned[1] == set(one._item_ids)  # noqa: SLF001
    scored = two.score_items("cordless drill", [want[0][0], "nope"])
    assert scored[0] is not None and scored[1] is None
    assert isinstance(open_shard_retriever(untrained_folder, 0, 1), type(one))
    shard1 = open_shard_retriever(untrained_folder, 1, 2)
    assert isinstance(shard1, ShardTreeRetriever) and shard1.version().endswith("shard1of2")
    assert set(shard1._item_ids) == owned[1] and shard1.prf is None  # noqa: SLF001
    with pytest.raises(InvalidInput, match="shard"):
        open_shard_retriever(untrained_folder.parent, 0, 2)


def test_equal_scores_cut_the_same_top_k_sharded_or_not(untrained_folder: Path) -> None:
    """bf16 item scores tie often (3 significant digits); one model and merged shards must then
    cut the same ``k``: both order equal scores by item id. Here every item has one embedding."""
    from tandem.generative.tree_retriever import open_tree_retriever
    from tandem.generative.tree_shards import open_sharded_tree_retriever

    one = open_tree_retriever(untrained_folder, num_beams=30, prf_docs=0)
    two = open_sharded_tree_retriever(untrained_folder, 2, num_beams=30)
    assert isinstance(two, ShardedRetriever)
    row = one.artifact.model.nodes[-1].data[0].clone()
    for r in [one, *two.shards]:
        r.artifact.model.nodes[-1].data[:] = row  # type: ignore[attr-defined]
    hits = one.retrieve(["cordless drill"], 5)[0]
    assert len({h.score for h in hits}) == 1
    assert [h.item_id for h in hits] == sorted(one._item_ids)[:5]  # noqa: SLF001
    assert [h.item_id for h in two.retrieve(["cordless drill"], 5)[0]] == [h.item_id for h in hits]


def test_a_new_item_joins_the_shard_of_its_top_level_code_only(untrained_folder: Path) -> None:
    from tandem.catalog.item import Item
    from tandem.generative.tree_retriever import open_tree_retriever
    from tandem.generative.tree_shards import open_sharded_tree_retriever

    new = Item(item_id="n01", title="cordless drill driver kit with two batteries")
    one = open_tree_retriever(untrained_folder, num_beams=10, prf_docs=0)
    two = open_sharded_tree_retriever(untrained_folder, 2, num_beams=10)
    assert isinstance(two, ShardedRetriever)
    code = one.add_items([new])["n01"]
    for shard in two.shards:
        assert shard.add_items([new])["n01"] == code  # type: ignore[attr-defined]
    holders = [s for s in two.shards if "n01" in s._item_ids]  # type: ignore[attr-defined]  # noqa: SLF001
    assert len(holders) == 1 and holders[0].shard == code[0] % 2  # type: ignore[attr-defined]
    query = ["cordless drill driver kit"]
    want = [h.item_id for h in one.retrieve(query, 5)[0]]
    assert "n01" in want and [h.item_id for h in two.retrieve(query, 5)[0]] == want
