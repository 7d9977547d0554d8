"""PrefixTrie: vectorised build, insert without rebuild, lookups, device view."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.errors import InvalidInput
from tandem.ids.trie import PrefixTrie


def _children_sets(trie: PrefixTrie) -> dict[tuple[int, ...], set[int]]:
    """prefix → set of next tokens, derived from the trie's own tables by walking it."""
    out: dict[tuple[int, ...], set[int]] = {}
    frontier: list[tuple[tuple[int, ...], int]] = [((), 0)]
    for d in range(trie.length):
        nxt_frontier = []
        for prefix, node in frontier:
            toks, nxt = trie.children(d, [node])
            valid = toks[0] >= 0
            out[prefix] = set(toks[0][valid].tolist())
            nxt_frontier += [((*prefix, int(t)), int(n)) for t, n in zip(toks[0][valid], nxt[0][valid], strict=True)]
        frontier = nxt_frontier
    return out


def _expected_children(seqs: np.ndarray) -> dict[tuple[int, ...], set[int]]:
    out: dict[tuple[int, ...], set[int]] = {}
    for row in seqs.tolist():
        for d in range(len(row)):
            out.setdefault(tuple(row[:d]), set()).add(row[d])
    return out


seq_sets = st.integers(1, 4).flatmap(
    lambda length: st.lists(st.tuples(*[st.integers(0, 6)] * length), min_size=1, max_size=40, unique=True))


@given(seq_sets)
@settings(max_examples=60, deadline=None)
def test_build_matches_sequences(rows: list[tuple[int, ...]]) -> None:
    seqs = np.array(rows, dtype=np.int64)
    trie = PrefixTrie.from_sequences(seqs)
    assert len(trie) == len(rows)
    for i, row in enumerate(rows):
        assert trie.leaf(row) == i
    assert _children_sets(trie) == _expected_children(seqs)
    np.testing.assert_array_equal(trie.sequences(), seqs)


@given(seq_sets, st.data())
@settings(max_examples=60, deadline=None)
def test_insert_equals_build(rows: list[tuple[int, ...]], data: st.DataObject) -> None:
    split = data.draw(st.integers(0, len(rows)))
    base = np.array(rows[:split], dtype=np.int64).reshape(split, len(rows[0]))
    trie = PrefixTrie.from_sequences(base)
    for i, row in enumerate(rows[split:], start=split):
        assert not trie.contains(row)
        assert trie.insert(row) == i
        assert trie.contains(row)
    full = np.array(rows, dtype=np.int64)
    assert _children_sets(trie) == _expected_children(full)
    assert [trie.leaf(r) for r in rows] == list(range(len(rows)))


def test_insert_widens_full_rows_and_is_idempotent() -> None:
    trie = PrefixTrie.from_sequences([[0, 0], [0, 1]])  # root has 1 child, node (0,) has 2
    for t in range(2, 40):
        trie.insert([0, t])
    for t in range(1, 30):
        trie.insert([t, 5])
    assert len(trie) == 2 + 38 + 29
    assert trie.insert([0, 7]) == 7  # already present: unchanged leaf value
    assert len(trie) == 69
    assert _children_sets(trie)[(0,)] == set(range(40))
    assert trie.version == 38 + 29


def test_non_members_and_wrong_lengths() -> None:
    trie = PrefixTrie.from_sequences([[1, 2, 3], [1, 2, 4]])
    assert not trie.contains([1, 2, 5])
    assert not trie.contains([1, 2])
    assert not trie.contains([1, 2, 3, 4])
    assert trie.leaf([9, 9, 9]) is None
    assert [1, 2, 4] in trie


@pytest.mark.parametrize("bad, msg", [
    ([[1, 2], [1, 2]], "duplicate"),
    ([1, 2, 3], "2-D"),
    ([[1, -2]], ">= 0"),
    ([[1.5, 2.0]], "integer"),
])
def test_bad_input(bad: object, msg: str) -> None:
    with pytest.raises(InvalidInput, match=msg):
        PrefixTrie.from_sequences(bad)  # type: ignore[arg-type]


def test_insert_wrong_length_refused() -> None:
    trie = PrefixTrie.from_sequences([[1, 2, 3]])
    with pytest.raises(InvalidInput, match="`seq` must have 3 tokens"):
        trie.insert([1, 2])


def test_empty_trie() -> None:
    trie = PrefixTrie.from_sequences(np.zeros((0, 3), np.int64))
    assert len(trie) == 0 and not trie.contains([0, 0, 0])
    assert trie.insert([4, 5, 6]) == 0
    assert trie.contains([4, 5, 6])


def test_device_view_matches_tables() -> None:
    rng = np.random.default_rng(1)
    seqs = np.unique(rng.integers(0, 9, size=(300, 4)), axis=0)
    trie = PrefixTrie.from_sequences(seqs)
    view = trie.device_view("cpu")
    for d in range(trie.length):
        toks, nxt = trie.children(d, np.arange(trie.num_nodes(d)))
        mapped = view.vocab[d][view.cand_local[d]].numpy()
        valid = view.cand_next[d].numpy() >= 0
        np.testing.assert_array_equal(valid, toks >= 0)
        np.testing.assert_array_equal(mapped[valid], toks[valid])
        np.testing.assert_array_equal(view.cand_next[d].numpy(), nxt)
        np.testing.assert_array_equal(view.vocab[d].numpy(), np.unique(seqs[:, d]))
    assert trie.device_view("cpu") is view  # cached
    trie.insert([100, 100, 100, 100])
    view2 = trie.device_view(torch.device("cpu"))
    assert view2 is not view and 100 in view2.vocab[0].tolist()


def test_builds_100k_ids_in_seconds() -> None:
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 64, size=(110_000, 4)), axis=0)[:100_000]
    seqs = np.concatenate([1000 + np.arange(4) * 64 + codes, np.ones((len(codes), 1), np.int64)], axis=1)
    started = time.perf_counter()
    trie = PrefixTrie.from_sequences(seqs)
    took = time.perf_counter() - started
    assert len(trie) == 100_000
    assert took < 5.0, f"build took {took:.2f}s"
    probe = seqs[rng.integers(0, len(seqs), 50)]
    assert all(trie.contains(s) for s in probe)
