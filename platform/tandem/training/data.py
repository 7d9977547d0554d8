"""Turning items and query pairs into batches: exposure schedules, curriculum, collation."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from tandem.errors import InvalidInput
from tandem.training.objectives import Example, q2id

if TYPE_CHECKING:
    import torch

    from tandem.generative.tokenizer import TandemTokenizer


def training_pairs(
    queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], known_items: set[str], min_grade: int
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(query text, item id) pairs for alignment: judged grade ≥ ``min_grade``, item known.

    Returns the pairs and counts of what was skipped (``unknown_item``, ``low_grade``,
    ``no_query_text``) so the caller can report them; a qrels line naming an item outside
    the catalog is a data problem worth seeing, not a reason to stop training.
    """
    pairs: list[tuple[str, str]] = []
    skipped = {"unknown_item": 0, "low_grade": 0, "no_query_text": 0}
    for qid in sorted(qrels):
        text = queries.get(qid, "")
        for item_id, grade in sorted(qrels[qid].items()):
            if not text.strip():
                skipped["no_query_text"] += 1
            elif grade < min_grade:
                skipped["low_grade"] += 1
            elif item_id not in known_items:
                skipped["unknown_item"] += 1
            else:
                pairs.append((text, item_id))
    return pairs, skipped


def difficulty(text_lengths: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """A difficulty score per item for progressive memorisation (lower = learn first).

    Short texts are easier to bind to an ID; so are *well-separated* items, those that
    share their ID prefix (all but the last position) with few siblings — an item in a
    crowded leaf cluster differs from its neighbours only in the suffix. The two ranks
    are averaged so neither scale dominates.
    """
    n = len(text_lengths)
    if n == 0:
        return np.zeros(0)
    prefixes = [tuple(row[:-1]) for row in codes.tolist()]
    sizes: dict[tuple[int, ...], int] = {}
    for p in prefixes:
        sizes[p] = sizes.get(p, 0) + 1
    crowd = np.array([sizes[p] for p in prefixes], dtype=np.float64)
    rank_len = np.argsort(np.argsort(text_lengths, kind="stable"), kind="stable") / max(n - 1, 1)
    rank_crowd = np.argsort(np.argsort(crowd, kind="stable"), kind="stable") / max(n - 1, 1)
    return (rank_len + rank_crowd) / 2.0


def progressive_subset(scores: np.ndarray, epoch: int, ramp_epochs: int, start_fraction: float) -> np.ndarray:
    """Indices of the items trained in ``epoch``: the easiest fraction, growing to all.

    The fraction rises linearly from ``start_fraction`` at epoch 0 to 1 at ``ramp_epochs``
    (the chapter's "memorise the easy items first, then widen to the whole collection").
    """
    if ramp_epochs <= 0 or epoch >= ramp_epochs:
        return np.arange(len(scores))
    fraction = start_fraction + (1.0 - start_fraction) * epoch / ramp_epochs
    keep = max(1, int(round(fraction * len(scores))))
    return np.sort(np.argsort(scores, kind="stable")[:keep])


def balanced_exposures(items: np.ndarray, exposures: int, rng: np.random.Generator) -> np.ndarray:
    """Every item in ``items`` exactly ``exposures`` times, shuffled.

    Balanced exposure (section 5.1.2): memorisation samples items, not queries, so a
    popular item gets no more doc→id updates than a rare one.
    """
    if exposures < 1:
        raise InvalidInput(f"`exposures` must be >= 1, got {exposures}")
    order = np.repeat(items, exposures)
    rng.shuffle(order)
    return order


def batches(examples: Sequence[Example], batch_size: int, rng: np.random.Generator | None,
            bucket_batches: int = 32) -> Iterator[list[Example]]:
    """Split ``examples`` into batches; shuffled when ``rng`` is given.

    Shuffled batches are length-bucketed: the shuffled examples are cut into windows of
    ``bucket_batches`` batches, each window is sorted by source length and cut into batches,
    and the batches are shuffled. A batch is padded to its longest source, so a random batch
    of Home Depot titles (mean 11.5 words, 99th percentile 23) pads to about twice the mean;
    bucketed batches pad to about their own length. Each epoch still sees every example
    once, in an order that changes per epoch (``bucket_batches=1`` turns bucketing off).
    """
    order = np.arange(len(examples))
    if rng is None:
        for start in range(0, len(order), batch_size):
            yield [examples[i] for i in order[start : start + batch_size]]
        return
    rng.shuffle(order)
    window = batch_size * max(1, bucket_batches)
    cuts: list[np.ndarray] = []
    for w in range(0, len(order), window):
        part = order[w : w + window]
        lengths = np.fromiter((len(examples[i].source) for i in part), dtype=np.int64, count=len(part))
        part = part[np.argsort(lengths, kind="stable")]
        cuts.extend(part[start : start + batch_size] for start in range(0, len(part), batch_size))
    for b in rng.permutation(len(cuts)):
        yield [examples[i] for i in cuts[b]]


def collate(batch: Sequence[Example], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Pad a batch into model inputs; labels use ``-100`` where padded (ignored by the loss)."""
    import torch

    n = len(batch)
    src_len = max(len(e.source) for e in batch)
    tgt_len = max(len(e.target) for e in batch)
    input_ids = torch.full((n, src_len), pad_id, dtype=torch.long)
    labels = torch.full((n, tgt_len), -100, dtype=torch.long)
    for i, e in enumerate(batch):
        input_ids[i, : len(e.source)] = torch.tensor(e.source, dtype=torch.long)
        labels[i, : len(e.target)] = torch.tensor(e.target, dtype=torch.long)
    # The decoder input is the target shifted right behind the start token (pad, as in T5).
    decoder_input_ids = torch.cat([torch.full((n, 1), pad_id, dtype=torch.long), labels[:, :-1]], dim=1)
    decoder_input_ids = decoder_input_ids.masked_fill(decoder_input_ids == -100, pad_id)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": (input_ids != pad_id).long().to(device),
        "decoder_input_ids": decoder_input_ids.to(device),
        "labels": labels.to(device),
        "tasks": torch.tensor([int(e.task) for e in batch], dtype=torch.long, device=device),
    }


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """A query→id example before tokenisation, so strategies can rewrite its text per epoch."""

    text: str
    item: int
    """Item index of the target."""
    group: int
    """Index of the query text's positive set (see :class:`QueryGroups`)."""
    level: int
    """Curriculum level (0 exact-match, 1 templated, 2 real, 3 rewritten)."""

    def rewritten(self, text: str) -> QuerySpec:
        """The same example with another text, at the "rewritten" level."""
        return replace(self, text=text, level=3)


class QueryGroups:
    """Query text → group index → positive item indices, over every pair source.

    One text may come from a real query and a template at once ("hose"); its positives are
    the union, which is what negatives must avoid.
    """

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.positives: list[set[int]] = []

    def add(self, text: str, item: int) -> int:
        """Register ``(text, item)``; returns the text's group."""
        g = self.index.setdefault(text, len(self.index))
        if g == len(self.positives):
            self.positives.append(set())
        self.positives[g].add(item)
        return g


def encode_q2id(tok: TandemTokenizer, specs: Sequence[QuerySpec], codes: np.ndarray, max_input_length: int,
                hard: Mapping[int, Sequence[int]] | None = None) -> list[Example]:
    """Tokenise query specs into query→id examples (hard negatives looked up by group)."""
    if not specs:
        return []
    ids = tok.encode_texts([s.text for s in specs], max_input_length - 1)
    hard = hard or {}
    return [q2id(tok, t, codes[s.item].tolist(), s.item, group=s.group, hard=hard.get(s.group, ()), level=s.level)
            for s, t in zip(specs, ids, strict=True)]
