"""Objectives, multi-task loss, span corruption, exposure schedules and training pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tandem.errors import InvalidInput
from tandem.training.data import balanced_exposures, batches, collate, difficulty, progressive_subset, training_pairs
from tandem.training.denoise import span_corrupt
from tandem.training.objectives import Example, Task, multitask_loss, task_weights


def test_task_weights_are_the_bidirectional_alpha() -> None:
    w = task_weights(0.7)
    assert w[Task.Q2ID] == pytest.approx(0.7) and w[Task.ID2Q] == pytest.approx(0.3)
    with pytest.raises(InvalidInput, match="`alpha`"):
        task_weights(1.5)


def test_multitask_loss_weights_per_task_means() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 5)
    labels = torch.tensor([[1, 2], [3, -100], [4, 0]])
    tasks = torch.tensor([Task.Q2ID, Task.Q2ID, Task.ID2Q])
    total, parts = multitask_loss(logits, labels, tasks, task_weights(0.25))
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    ex0, ex1, ex2 = nll[0].mean(), nll[1, 0], nll[2].mean()
    q2id = (ex0 + ex1) / 2  # per-example means first: the padded token does not count
    assert parts[Task.Q2ID] == pytest.approx(float(q2id), rel=1e-5)
    assert float(total) == pytest.approx(float(0.25 * q2id + 0.75 * ex2), rel=1e-5)


def test_span_corruption_restores_the_text() -> None:
    rng = np.random.default_rng(0)
    tokens = list(range(10, 40))
    sentinels = [100 + i for i in range(8)]
    for _ in range(50):
        ex = span_corrupt(tokens, sentinels, 1, rng, noise_density=0.3, mean_span=2.0)
        assert ex is not None and ex.task is Task.DENOISE
        assert ex.source[-1] == 1 and ex.target[-1] == 1
        # Re-inserting each sentinel's span into the source gives the original text back.
        spans: dict[int, list[int]] = {}
        cur = None
        for t in ex.target[:-1]:
            if t in sentinels:
                cur = t
                spans[cur] = []
            else:
                spans[cur].append(t)
        restored = [x for t in ex.source[:-1] for x in (spans[t] if t in sentinels else [t])]
        assert restored == tokens
        masked = sum(len(v) for v in spans.values())
        assert 1 <= masked < len(tokens)
    assert span_corrupt([5], sentinels, 1, rng) is None


def test_balanced_exposures_are_exact() -> None:
    order = balanced_exposures(np.array([3, 5, 9]), 4, np.random.default_rng(1))
    assert sorted(np.bincount(order)[[3, 5, 9]].tolist()) == [4, 4, 4] and len(order) == 12
    with pytest.raises(InvalidInput, match="`exposures`"):
        balanced_exposures(np.array([1]), 0, np.random.default_rng(1))


def test_progressive_curriculum_starts_easy_and_widens() -> None:
    lengths = np.array([30, 5, 8, 40, 6, 7])
    codes = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 0, 1], [3, 0, 0], [0, 0, 2]])
    scores = difficulty(lengths, codes)
    assert scores[1] < scores[3]  # short and alone in its cluster vs long and crowded
    first = progressive_subset(scores, 0, ramp_epochs=2, start_fraction=0.5)
    assert len(first) == 3 and 3 not in first and 0 not in first
    assert progressive_subset(scores, 2, 2, 0.5).tolist() == list(range(6))


def test_training_pairs_filter_and_count() -> None:
    queries = {"q1": "drill", "q2": "hose", "q3": " "}
    qrels = {"q1": {"a": 5, "b": 2, "zz": 6}, "q2": {"c": 4}, "q3": {"a": 6}}
    pairs, skipped = training_pairs(queries, qrels, {"a", "b", "c"}, min_grade=4)
    assert pairs == [("drill", "a"), ("hose", "c")]
    assert skipped == {"unknown_item": 1, "low_grade": 1, "no_query_text": 1}


def test_shuffled_batches_are_length_bucketed_and_cover_every_example_once() -> None:
    rng = np.random.default_rng(0)
    examples = [Example(Task.DOC2ID, tuple(range(int(n))), (1,), item=i)
                for i, n in enumerate(rng.integers(2, 40, size=1000))]
    bucketed = list(batches(examples, 10, np.random.default_rng(1), bucket_batches=20))
    plain = list(batches(examples, 10, np.random.default_rng(1), bucket_batches=1))
    for got in (bucketed, plain):
        assert sorted(e.item for b in got for e in b) == list(range(1000))

    def padding(bs: list[list[Example]]) -> int:
        return sum(max(len(e.source) for e in b) * len(b) - sum(len(e.source) for e in b) for b in bs)

    assert padding(bucketed) < padding(plain) / 5
    # Another epoch's generator gives another order; no generator keeps the input order.
    again = list(batches(examples, 10, np.random.default_rng(2), bucket_batches=20))
    assert [e.item for e in again[0]] != [e.item for e in bucketed[0]]
    assert [e.item for b in batches(examples, 10, None) for e in b] == list(range(1000))


def test_collate_pads_and_shifts() -> None:
    batch = [Example(Task.DOC2ID, (7, 8, 1), (20, 21, 1)), Example(Task.ID2Q, (9, 1), (30, 1))]
    out = collate(batch, 0, torch.device("cpu"))
    assert out["input_ids"].tolist() == [[7, 8, 1], [9, 1, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out["labels"].tolist() == [[20, 21, 1], [30, 1, -100]]
    assert out["decoder_input_ids"].tolist() == [[0, 20, 21], [0, 30, 1]]
    assert out["tasks"].tolist() == [Task.DOC2ID, Task.ID2Q]
