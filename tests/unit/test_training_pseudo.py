"""Pseudo-queries: templates from item fields, id→query sampling and the round-trip filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tandem.catalog.item import Item
from tandem.errors import InvalidInput
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.training.pseudo import (
    catalog_template_pairs,
    product_phrase,
    product_type,
    template_queries,
)

MOWER = Item(item_id="m1", title="Toro Personal Pace Recycler 22 in. Variable Speed Self-Propelled Gas Lawn Mower "
                                  "with Briggs & Stratton Engine")
SHEET = Item(item_id="s1", title="MD Building Products 36 in. x 36 in. Cloverleaf Aluminum Sheet, Silver")
FAUCET = Item(item_id="f1", title="Delta Vero 1-Handle Shower Only Faucet Trim Kit in Chrome (Valve Not Included)")
HOSE = Item(item_id="h1", title="Maplecrest 12 In Yellow Copper Hose", brand="Maplecrest",
            category=["Garden", "Hose"], attributes={"material": "copper"})


def test_product_phrase_stops_at_clauses_but_not_at_units() -> None:
    assert product_phrase(MOWER.title).endswith("Gas Lawn Mower")
    assert product_phrase(FAUCET.title) == "Delta Vero 1-Handle Shower Only Faucet Trim Kit"
    assert product_phrase(HOSE.title) == HOSE.title  # "12 In Yellow": a unit, not "in <colour>"


def test_product_type_from_title_and_from_category() -> None:
    assert product_type(MOWER) == ["mower", "lawn mower"]
    assert product_type(Item(item_id="a", title="Simpson Strong-Tie 12-Gauge Angle")) == ["angle"]
    assert product_type(HOSE) == ["hose"]  # the category leaf wins


def test_templates_produce_the_expected_phrases() -> None:
    mower = template_queries(MOWER, 50)
    assert mower[:3] == ["lawn mower", "mower", "toro lawn mower"]  # type, head noun, brand + type
    assert "22 in lawn mower" in mower  # dimension phrase, unit period dropped
    assert "gas lawn mower" in mower  # title modifier + type
    assert "toro personal pace" in mower  # title prefix
    sheet = template_queries(SHEET, 50)
    assert "36 in x 36 in aluminum sheet" in sheet
    assert "chrome trim kit" in template_queries(FAUCET, 50)  # "in <colour>" clause
    hose = template_queries(HOSE, 50)
    assert hose[:2] == ["hose", "maplecrest hose"]
    assert {"copper hose", "yellow hose", "12 in hose"} <= set(hose)
    for queries in (mower, sheet, hose):
        assert len(queries) == len(set(queries))
        assert all(q == q.lower() and q.strip() == q and "  " not in q for q in queries)


def test_templates_never_repeat_the_full_title() -> None:
    item = Item(item_id="x", title="Claw Hammer", category=["Hammer"])
    assert "claw hammer" not in template_queries(item, 20)


def test_count_cap_and_seed_determinism() -> None:
    full = template_queries(MOWER, 100)
    assert len(full) > 6
    for n in (0, 1, 2, 5):
        assert len(template_queries(MOWER, n)) == n
    assert template_queries(MOWER, 5, seed=3) == template_queries(MOWER, 5, seed=3)
    draws = {tuple(template_queries(MOWER, 5, seed=s)) for s in range(8)}
    assert len(draws) > 1  # the seed picks among the optional candidates
    for d in draws:
        assert d[:3] == ("lawn mower", "mower", "toro lawn mower")  # always kept
        assert set(d) <= set(full)
        assert [q for q in full if q in d] == list(d)  # drawn ones keep their order


def test_negative_count_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="`max_count`"):
        template_queries(MOWER, -1)


def test_catalog_pairs_cover_every_item() -> None:
    items = tiny_catalog()
    pairs = catalog_template_pairs(items, 3)
    assert {i for _, i in pairs} == {it.item_id for it in items}
    assert all(sum(1 for _, i in pairs if i == it.item_id) <= 3 for it in items)


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> object:
    from tandem.generative.artifacts import load_artifact
    from tandem_testing.model_fixtures import untrained_model_dir

    import torch

    torch.set_num_threads(1)
    items = tiny_catalog()
    folder = untrained_model_dir(Path(tmp_path_factory.mktemp("micro")), items)
    return load_artifact(folder, torch.device("cpu"))


def _trie(art: object) -> tuple[object, np.ndarray]:
    from tandem.ids.trie import PrefixTrie

    tok = art.tokenizer  # type: ignore[attr-defined]
    codes = np.asarray(art.id_map.as_array(), dtype=np.int64)  # type: ignore[attr-defined]
    tokens = tok.id_table[np.arange(tok.id_length)[None, :], codes]
    return PrefixTrie.from_sequences(tokens), codes


def test_round_trip_keeps_exactly_the_queries_that_map_back(micro: object) -> None:
    from tandem.training.pseudo import round_trip_filter

    trie, codes = _trie(micro)
    n = len(codes)
    queries = ["cordless drill", "garden hose", "white paint"]
    pairs = [(q, i) for q in queries for i in range(n)]
    model, tok = micro.model, micro.tokenizer  # type: ignore[attr-defined]
    top1 = round_trip_filter(model, tok, trie, pairs, top_k=1, max_input_length=16)
    # Each query maps back to exactly one item at k = 1 ...
    for j in range(len(queries)):
        assert sum(top1[j * n : (j + 1) * n]) == 1
    # ... to three at k = 3, a superset, and to every item when k covers the catalog.
    top3 = round_trip_filter(model, tok, trie, pairs, top_k=3, max_input_length=16)
    for j in range(len(queries)):
        assert sum(top3[j * n : (j + 1) * n]) == 3
    assert all(b for a, b in zip(top1, top3, strict=True) if a)
    assert all(round_trip_filter(model, tok, trie, pairs, top_k=n, max_input_length=16))
    with pytest.raises(InvalidInput, match="`top_k`"):
        round_trip_filter(model, tok, trie, pairs, top_k=0)


def test_generated_queries_are_text_distinct_and_seeded(micro: object) -> None:
    from tandem.training.pseudo import generate_queries

    _, codes = _trie(micro)
    model, tok = micro.model, micro.tokenizer  # type: ignore[attr-defined]
    a = generate_queries(model, tok, codes[:4], 3, max_length=6, seed=5)
    b = generate_queries(model, tok, codes[:4], 3, max_length=6, seed=5)
    assert a == b and len(a) == 4
    for qs in a:
        assert 1 <= len(qs) <= 3 and len(set(qs)) == len(qs)
        assert all(q.strip() and "<id_" not in q and "<q2id>" not in q for q in qs)
