"""Semantic IDs: build, uniqueness, near-duplicates, reserved space, persistence, stats, errors."""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tandem.catalog import Item
from tandem.errors import CorruptArtifact, InvalidInput, NotFound, Unavailable
from tandem.ids import EmbedderConfig, IdMap, SemanticIdConfig, build_semantic_ids
from tandem.ids.kmeans import balanced_kmeans

TYPES = ["cordless drill", "led light bulb", "garden hose", "paint roller", "toilet seat", "door hinge"]
BRANDS = ["Dewalt", "Philips", "Flexzilla", "Behr", "Kohler", "Everbilt"]
SIZES = ["small", "large", "2-pack", "10 ft.", "white", "black", "heavy duty", "compact"]


def catalog(n_per_type: int = 30, categories: bool = False) -> list[Item]:
    items = []
    for t, (kind, brand) in enumerate(zip(TYPES, BRANDS, strict=True)):
        for j, size in zip(range(n_per_type), itertools.cycle(SIZES), strict=False):
            items.append(Item(item_id=f"{t}-{j}", title=f"{brand} {size} {kind} model {j}",
                              category=["Tools" if t % 2 == 0 else "Home", kind] if categories else []))
    return items


CFG = SemanticIdConfig(levels=2, branching=4, leaf_capacity=16, reserved_per_leaf=4,
                       embedder=EmbedderConfig(dim=16))


@pytest.fixture(scope="module")
def built() -> tuple[list[Item], IdMap]:
    items = catalog()
    return items, build_semantic_ids(items, CFG)


def test_every_item_gets_a_unique_fixed_length_id(built: tuple[list[Item], IdMap]) -> None:
    items, idmap = built
    assert len(idmap) == len(items) and idmap.version == 1
    ids = [idmap.codes(it.item_id) for it in items]
    assert len(set(ids)) == len(items)
    assert {len(c) for c in ids} == {CFG.levels + 1}
    space = idmap.code_space()
    assert all(0 <= c < s for codes in ids for c, s in zip(codes, space, strict=True))
    assert all(idmap.item_for(idmap.codes(it.item_id)) == it.item_id for it in items)
    assert idmap.item_for((99, 99, 99)) is None
    with pytest.raises(NotFound):
        idmap.codes("nope")
    # Base items use at most capacity - reserved suffix codes per leaf.
    assert max(c[-1] for c in ids) < CFG.leaf_capacity - CFG.reserved_per_leaf


def test_top_level_separates_product_types() -> None:
    items = [it for it in catalog() if int(it.item_id.split("-")[0]) < 4]  # four types, four codes
    idmap = build_semantic_ids(items, CFG)
    by_type: dict[str, set[int]] = {}
    for it in items:
        by_type.setdefault(it.item_id.split("-")[0], set()).add(idmap.codes(it.item_id)[0])
    assert all(len(codes) == 1 for codes in by_type.values())
    assert len(set().union(*by_type.values())) == 4


def test_identical_titles_share_prefix_and_differ_in_suffix() -> None:
    items = catalog(12) + [Item(item_id=f"dup{i}", title="Kohler white toilet seat model 3") for i in range(3)]
    idmap = build_semantic_ids(items, CFG)
    dups = [idmap.codes(f"dup{i}") for i in range(3)]
    assert len({c[:-1] for c in dups}) == 1
    assert len({c[-1] for c in dups}) == 3


def test_assign_new_items_into_reserved_space() -> None:
    items = catalog()
    idmap = build_semantic_ids(items, CFG)  # own map: assign mutates it
    before = {it.item_id: idmap.codes(it.item_id) for it in items}
    twin = items[5]
    new = [Item(item_id="new-1", title=twin.title), Item(item_id="new-2", title="Behr large paint roller model 99")]
    got = idmap.assign([*new, items[0]])
    assert idmap.version == 2
    assert got[items[0].item_id] == before[items[0].item_id]
    assert got["new-1"][:-1] == before[twin.item_id][:-1]  # lands next to its twin
    assert all(idmap.codes(iid) == c for iid, c in before.items())  # existing IDs never change
    assert len({*before.values(), got["new-1"], got["new-2"]}) == len(items) + 2
    assert idmap.assign([items[1]]) == {items[1].item_id: before[items[1].item_id]}
    assert idmap.version == 2  # nothing new, no bump


def test_full_leaf_spills_to_a_sibling() -> None:
    items = catalog(10)
    idmap = build_semantic_ids(items, CFG)
    free = idmap.free_slots()
    twin = items[0]
    flood = [Item(item_id=f"flood{i}", title=twin.title) for i in range(40)]
    got = idmap.assign(flood)
    assert len(set(got.values())) == 40
    assert len({c[:-1] for c in got.values()}) > 1  # one leaf holds only `leaf_capacity`
    assert all(c[-1] < CFG.leaf_capacity for c in got.values())
    assert idmap.free_slots() == free - 40
    assert all(idmap.codes(it.item_id) == c for it, c in zip(items, [idmap.codes(i.item_id) for i in items],
                                                               strict=True))


def test_exhausted_id_space_is_a_clear_error() -> None:
    cfg = SemanticIdConfig(levels=1, branching=2, leaf_capacity=4, reserved_per_leaf=1,
                           embedder=EmbedderConfig(dim=4))
    items = catalog(1)  # 6 items, room for 2 leaves x 4 codes = 8
    idmap = build_semantic_ids(items, cfg)
    idmap.assign([Item(item_id="n1", title="x drill"), Item(item_id="n2", title="y hose")])
    with pytest.raises(InvalidInput, match="no free suffix"):
        idmap.assign([Item(item_id="n3", title="z bulb")])


def test_save_load_roundtrip(built: tuple[list[Item], IdMap], tmp_path: Path) -> None:
    items, idmap = built
    idmap.save(str(tmp_path / "ids"))
    loaded = IdMap.load(str(tmp_path / "ids"))
    assert loaded.version == idmap.version and len(loaded) == len(idmap)
    assert all(loaded.codes(it.item_id) == idmap.codes(it.item_id) for it in items)
    assert loaded.config == idmap.config
    # The embedder came back: a new item is placed as the original map places it.
    probe = Item(item_id="probe", title="Dewalt compact cordless drill model 77")
    a = loaded.assign([probe])["probe"]
    fresh = IdMap.load(str(tmp_path / "ids"))
    assert fresh.assign([probe])["probe"] == a


def test_newer_minor_format_loads_with_warning(built: tuple[list[Item], IdMap], tmp_path: Path) -> None:
    _, idmap = built
    idmap.save(str(tmp_path))
    doc = json.loads((tmp_path / "idmap.json").read_text())
    doc["format_version"] = "1.7"
    doc["future_field"] = {"x": 1}
    doc["config"]["future_knob"] = 3
    (tmp_path / "idmap.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="future"):
        loaded = IdMap.load(str(tmp_path))
    assert len(loaded) == len(idmap)
    doc["format_version"] = "2.0"
    (tmp_path / "idmap.json").write_text(json.dumps(doc))
    with pytest.raises(CorruptArtifact, match="format"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        IdMap.load(str(tmp_path))
    with pytest.raises(NotFound):
        IdMap.load(str(tmp_path / "missing"))


def test_stats(built: tuple[list[Item], IdMap]) -> None:
    items, idmap = built
    st = idmap.stats()
    assert st["items"] == len(items) and st["depth"] == CFG.levels + 1
    levels = st["levels"]
    assert isinstance(levels, list) and len(levels) == CFG.levels + 1
    assert levels[0]["nodes"] == CFG.branching and levels[0]["utilisation"] == 1.0
    assert levels[-1]["nodes"] == len(items) and levels[-1]["largest_cluster"] == 1
    assert sum(1 for _ in levels if _["kind"] == "suffix") == 1
    assert 0.0 < levels[0]["entropy_ratio"] <= 1.0
    codes = idmap.as_array()
    _, counts = np.unique(codes[:, :-1], axis=0, return_counts=True)
    assert st["collisions_before_suffix"] == int(counts[counts > 1].sum())
    assert levels[0]["largest_cluster"] <= np.ceil(CFG.max_cluster_ratio * len(items) / CFG.branching)
    json.dumps(st)


def test_categories_become_top_levels() -> None:
    items = catalog(12, categories=True)
    idmap = build_semantic_ids(items, CFG.model_copy(update={"levels": 3}))
    assert idmap.category_levels == 1
    tops = {it.category[0]: set() for it in items}
    for it in items:
        tops[it.category[0]].add(idmap.codes(it.item_id)[0])
    assert all(len(v) == 1 for v in tops.values()) and len(set().union(*tops.values())) == 2
    new = idmap.assign([Item(item_id="c-new", title="Kohler toilet seat", category=["Home", "toilet seat"])])
    home_code = next(iter(tops["Home"]))
    assert new["c-new"][0] == home_code


@pytest.mark.parametrize("items, cfg, msg", [
    ([], CFG, "empty"),
    ([Item(item_id="a", title="x"), Item(item_id="a", title="y")], CFG, "duplicate item_id 'a'"),
    (catalog(1)[:3], CFG, r"`branching` \(4\) is larger than the catalog \(3 items\)"),
    (catalog(30), SemanticIdConfig(levels=1, branching=2, leaf_capacity=4, reserved_per_leaf=1), "ID space holds"),
])
def test_bad_catalogs(items: list[Item], cfg: SemanticIdConfig, msg: str) -> None:
    with pytest.raises(InvalidInput, match=msg):
        build_semantic_ids(items, cfg)


def test_bad_config_and_missing_sentence_transformers() -> None:
    with pytest.raises(ValueError, match="reserved_per_leaf"):
        SemanticIdConfig(leaf_capacity=4, reserved_per_leaf=4)
    with pytest.raises(ValueError, match="category_levels"):
        SemanticIdConfig(levels=2, category_levels=2)
    with pytest.raises(ValueError, match="model_path"):
        EmbedderConfig(kind="sentence-transformers")
    cfg = CFG.model_copy(update={"embedder": EmbedderConfig(kind="sentence-transformers", model_path="/nope")})
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(Unavailable, match="sentence-transformers"):
            build_semantic_ids(catalog(2), cfg)
    else:  # installed: a bad path is the user's error
        with pytest.raises(InvalidInput, match="model_path"):
            build_semantic_ids(catalog(2), cfg)


def test_balanced_kmeans_respects_cap_and_finds_clear_groups() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0], [5, 0, 0], [0, 5, 0], [0, 0, 5]], dtype=np.float32)
    sizes = [28, 25, 25, 22]
    x = np.concatenate([rng.normal(c, 0.1, (n, 3)) for c, n in zip(centres, sizes, strict=True)]).astype(np.float32)
    truth = np.repeat(np.arange(4), sizes)
    labels, cents = balanced_kmeans(x, 4, max_ratio=1.2, seed=1)
    assert cents.shape == (4, 3)
    assert {frozenset(np.flatnonzero(labels == c).tolist()) for c in range(4)} == \
        {frozenset(np.flatnonzero(truth == c).tolist()) for c in range(4)}
    # A lopsided set is cut to the cap, and no cluster is left empty.
    y = np.concatenate([rng.normal(0, 0.1, (90, 3)), rng.normal(5, 0.1, (10, 3))]).astype(np.float32)
    labels, _ = balanced_kmeans(y, 4, max_ratio=1.2, seed=1)
    counts = np.bincount(labels, minlength=4)
    assert counts.max() <= 30 and (counts > 0).all()
