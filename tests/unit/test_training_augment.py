"""Augmentation: query rewrites, document perturbations and the mixing cap."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.errors import InvalidInput
from tandem.training.augment import mix_augmented, perturb_document, rewrite_query


def test_rewrites_differ_and_are_seeded() -> None:
    q = "cordless hammer drill kit"
    outs = [rewrite_query(q, np.random.default_rng(s)) for s in range(30)]
    assert all(o != q and o.strip() for o in outs)
    assert outs == [rewrite_query(q, np.random.default_rng(s)) for s in range(30)]
    assert any(len(o.split()) == 3 for o in outs)  # a dropped word
    assert any(sorted(o.split()) == sorted(q.split()) for o in outs)  # a swap
    assert rewrite_query("hammer", np.random.default_rng(0), ops=["drop"]) != "hammer"  # falls back to a typo
    with pytest.raises(InvalidInput, match="`ops`"):
        rewrite_query(q, np.random.default_rng(0), ops=["shout"])


def test_swap_exchanges_adjacent_words() -> None:
    out = rewrite_query("a b c", np.random.default_rng(0), ops=["swap"])
    assert out in {"b a c", "a c b"}


def test_document_perturbation_reorders_phrases_or_substitutes() -> None:
    text = "Garden Hose 50 ft. Heavy Duty, Green with Brass Fittings"
    out = perturb_document(text, np.random.default_rng(1))
    assert out != text and sorted(out.replace(",", "").split()) == sorted(
        text.replace(",", "").replace("with", "").split())
    sub = {"green": ["red"]}
    outs = {perturb_document(text, np.random.default_rng(s), sub) for s in range(20)}
    assert any("red" in o.split() and "Green" not in o for o in outs)
    assert perturb_document("hammer", np.random.default_rng(0)) == "hammer"


@settings(max_examples=80, deadline=None)
@given(n=st.integers(0, 200), share=st.floats(0, 0.99), seed=st.integers(0, 1000))
def test_augmented_share_never_exceeds_the_cap(n: int, share: float, seed: int) -> None:
    base = list(range(n))
    out, done = mix_augmented(base, lambda x, r: -x - 1, share, np.random.default_rng(seed))
    assert len(out) == n
    replaced = sum(1 for a, b in zip(base, out, strict=True) if a != b)
    assert replaced == done <= share * n
    assert done == int(share * n)
    assert all(o == b or o == -b - 1 for o, b in zip(out, base, strict=True))


def test_augment_may_decline_and_share_is_validated() -> None:
    out, done = mix_augmented([1, 2, 3, 4], lambda x, r: None, 0.5, np.random.default_rng(0))
    assert out == [1, 2, 3, 4] and done == 0
    with pytest.raises(InvalidInput, match="`share`"):
        mix_augmented([1], lambda x, r: x, 1.0, np.random.default_rng(0))
