"""Curriculum: easy→hard level order and accuracy-adaptive sampling probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from tandem.errors import InvalidInput
from tandem.training.curriculum import (
    adaptive_probabilities,
    adaptive_sample,
    curriculum_order,
    max_level,
)


def test_one_more_level_per_epoch_and_all_in_the_last() -> None:
    assert [max_level(e, 4) for e in range(4)] == [0, 1, 2, 3]
    assert [max_level(e, 6) for e in range(6)] == [0, 1, 2, 3, 3, 3]
    assert [max_level(e, 2) for e in range(2)] == [0, 3]
    assert max_level(0, 1) == 3
    with pytest.raises(InvalidInput, match="`epoch`"):
        max_level(4, 4)


def test_curriculum_order_is_easy_to_hard_and_cumulative() -> None:
    levels = [2, 0, 1, 3, 0, 2, 1]
    assert curriculum_order(levels, 0, 4).tolist() == [1, 4]
    assert curriculum_order(levels, 1, 4).tolist() == [1, 4, 2, 6]
    assert curriculum_order(levels, 2, 4).tolist() == [1, 4, 2, 6, 0, 5]
    assert curriculum_order(levels, 3, 4).tolist() == [1, 4, 2, 6, 0, 5, 3]
    # No exact-match examples: the first epoch trains the easiest level present.
    assert curriculum_order([2, 3, 2], 0, 4).tolist() == [0, 2]
    assert curriculum_order([], 0, 4).tolist() == []


def test_adaptive_probabilities_follow_exp_minus_alpha_accuracy() -> None:
    acc = np.array([0.0, 0.5, 1.0])
    p = adaptive_probabilities(acc, 2.0)
    expected = np.exp(-2.0 * acc) / np.exp(-2.0 * acc).sum()
    np.testing.assert_allclose(p, expected)
    assert p[0] > p[1] > p[2] and p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(adaptive_probabilities(acc, 0.0), [1 / 3] * 3)
    assert p[0] / p[2] == pytest.approx(np.exp(2.0))
    with pytest.raises(InvalidInput, match="`alpha`"):
        adaptive_probabilities(acc, -1)
    with pytest.raises(InvalidInput, match="`accuracy`"):
        adaptive_probabilities(np.array([1.5]), 1)


def test_adaptive_sampling_draws_hard_examples_more_often() -> None:
    acc = np.array([1.0] * 5 + [0.0] * 5)
    draws = adaptive_sample(acc, 3.0, 20000, np.random.default_rng(0))
    share_hard = float((draws >= 5).mean())
    assert share_hard == pytest.approx(1 / (1 + np.exp(-3.0)), abs=0.01)
    assert (adaptive_sample(acc, 3.0, 50, np.random.default_rng(1)) == adaptive_sample(
        acc, 3.0, 50, np.random.default_rng(1))).all()
