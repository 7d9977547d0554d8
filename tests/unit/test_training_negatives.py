"""Negatives never include a positive; the ranking losses rank in the expected direction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.errors import InvalidInput
from tandem.training.negatives import hard_negatives, in_batch_negatives, positives_by_query, random_negatives
from tandem.generative.model import sequence_logprob
from tandem.training.objectives import ranking_loss


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), pos=st.sets(st.integers(0, 39), max_size=10), count=st.integers(0, 50),
       seed=st.integers(0, 2**16))
def test_random_negatives_are_distinct_non_positives(n: int, pos: set[int], count: int, seed: int) -> None:
    negs = random_negatives(n, pos, count, np.random.default_rng(seed))
    assert not set(negs) & pos
    assert len(set(negs)) == len(negs)
    assert all(0 <= i < n for i in negs)
    assert len(negs) == min(count, n - len({p for p in pos if p < n}))


def test_random_negatives_are_seeded() -> None:
    a = random_negatives(1000, {1, 2}, 5, np.random.default_rng(3))
    assert a == random_negatives(1000, {1, 2}, 5, np.random.default_rng(3))
    with pytest.raises(InvalidInput, match="`count`"):
        random_negatives(10, set(), -1, np.random.default_rng(0))


def test_hard_negatives_skip_positives_and_unknown_items() -> None:
    pairs = [("drill", "a"), ("drill", "b"), ("hose", "c")]
    positives = positives_by_query(pairs)
    assert positives == {"drill": {"a", "b"}, "hose": {"c"}}
    index = {x: i for i, x in enumerate("abcdefg")}
    run = {"drill": ["a", "zzz", "d", "b", "e", "f", "g"], "hose": ["c", "c", "a"]}
    hard = hard_negatives(run, positives, index, 3)
    assert hard == {"drill": [index["d"], index["e"], index["f"]], "hose": [index["a"]]}
    for q, negs in hard.items():
        assert not {index[p] for p in positives[q]} & set(negs)
    assert hard_negatives({}, positives, index, 2) == {"drill": [], "hose": []}


def test_in_batch_negatives_exclude_the_querys_positives() -> None:
    items = [0, 1, 2, 1]
    positives = [{0, 2}, {1}, {2}, {1, 3}]
    negs = in_batch_negatives(items, positives)
    assert negs == [[1], [0, 2], [0, 1], [0, 2]]
    for n, p in zip(negs, positives, strict=True):
        assert not set(n) & p


def test_sequence_logprob_sums_target_token_logprobs() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    labels = torch.tensor([[0, 1]])
    assert sequence_logprob(logits, labels).item() == pytest.approx(np.log(0.5 * 0.8), abs=1e-6)
    padded = torch.tensor([[0, -100]])
    assert sequence_logprob(logits, padded).item() == pytest.approx(np.log(0.5), abs=1e-6)


@pytest.mark.parametrize("kind", ["margin", "contrastive"])
def test_ranking_loss_prefers_positive_above_negatives(kind: str) -> None:
    valid = torch.tensor([[True, True, False]])
    good = ranking_loss(torch.tensor([-1.0]), torch.tensor([[-9.0, -8.0, 0.0]]), valid, kind)
    bad = ranking_loss(torch.tensor([-9.0]), torch.tensor([[-1.0, -2.0, 0.0]]), valid, kind)
    assert good.item() < bad.item()
    if kind == "margin":
        assert good.item() == 0.0  # beyond the margin: no loss
        # the masked third column (score 0 > positive) must not count
        assert bad.item() == pytest.approx(((1 + 8) + (1 + 7)) / 2)
    # gradient raises the positive and lowers the negatives
    pos = torch.tensor([-3.0], requires_grad=True)
    neg = torch.tensor([[-2.0, -4.0, 0.0]], requires_grad=True)
    ranking_loss(pos, neg, valid, kind).backward()
    assert pos.grad is not None and neg.grad is not None
    assert pos.grad.item() < 0 and neg.grad[0, 0].item() > 0 and neg.grad[0, 2].item() == 0


def test_ranking_loss_without_negatives_is_zero() -> None:
    z = ranking_loss(torch.tensor([-1.0]), torch.zeros(1, 0), torch.zeros(1, 0, dtype=torch.bool), "margin")
    assert z.item() == 0.0
    with pytest.raises(InvalidInput, match="`rank_loss`"):
        ranking_loss(torch.tensor([-1.0]), torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool), "hinge")

