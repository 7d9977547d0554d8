"""Negatives for the ranking loss (seed chapter, section 5.3.2): random, BM25-hard, in-batch.

Every function here takes the set of *positives* of a query (all items any training pair
or qrels line marks relevant for that query text) and never returns one of them: a
positive trained as a negative teaches the model to push down exactly what it should
retrieve. Items are item *indices* (rows of the trainer's catalog).

BM25-hard negatives come from a precomputed BM25 run (query text → ranked item IDs), so
training and its tests need no JVM; :func:`bm25_run` computes one with the sparse module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tandem.catalog.item import Item
from tandem.errors import InvalidInput

if TYPE_CHECKING:
    import torch


def positives_by_query(pairs: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """Query text → every item ID the training pairs call relevant for it."""
    out: dict[str, set[str]] = {}
    for query, item_id in pairs:
        out.setdefault(query, set()).add(item_id)
    return out


def random_negatives(n_items: int, positives: set[int], count: int, rng: np.random.Generator) -> list[int]:
    """``count`` distinct items drawn uniformly from the catalog minus ``positives``.

    Returns fewer when the catalog has fewer non-positive items. Rejection sampling, since
    positives are a handful among thousands of items.
    """
    if count < 0:
        raise InvalidInput(f"`count` must be >= 0, got {count}")
    available = n_items - len({p for p in positives if 0 <= p < n_items})
    count = min(count, available)
    out: list[int] = []
    chosen: set[int] = set()
    while len(out) < count:
        for i in rng.integers(0, n_items, size=2 * (count - len(out)) + 4).tolist():
            if i not in positives and i not in chosen:
                chosen.add(i)
                out.append(i)
                if len(out) == count:
                    break
    return out


def hard_negatives(
    run: Mapping[str, Sequence[str]],
    positives: Mapping[str, set[str]],
    item_index: Mapping[str, int],
    count: int,
) -> dict[str, list[int]]:
    """Query text → its ``count`` highest-ranked BM25 items that are not positives.

    ``run`` maps a query text to BM25's ranking (item IDs, best first); items outside the
    trainer's catalog are skipped. Queries missing from ``run`` get no hard negatives.
    """
    if count < 0:
        raise InvalidInput(f"`count` must be >= 0, got {count}")
    out: dict[str, list[int]] = {}
    for query, pos in positives.items():
        ranked = run.get(query, ())
        negs: list[int] = []
        for item_id in ranked:
            if len(negs) == count:
                break
            if item_id in pos or item_id not in item_index:
                continue
            idx = item_index[item_id]
            if idx not in negs:
                negs.append(idx)
        out[query] = negs
    return out


def in_batch_negatives(items: Sequence[int], positives: Sequence[set[int]]) -> list[list[int]]:
    """For example ``i`` of a batch: the other examples' items, minus ``i``'s positives.

    ``items[i]`` is example ``i``'s target item and ``positives[i]`` the positive set of its
    query (which contains ``items[i]``). Duplicates are dropped, so two examples about the
    same item add it once.
    """
    if len(items) != len(positives):
        raise InvalidInput("`items` and `positives` must have one entry per example")
    out: list[list[int]] = []
    for i, pos in enumerate(positives):
        seen: list[int] = []
        for j, item in enumerate(items):
            if j != i and item not in pos and item not in seen:
                seen.append(item)
        out.append(seen)
    return out


def bm25_run(items: Sequence[Item], queries: Sequence[str], k: int, index_dir: Path) -> dict[str, list[str]]:
    """BM25 top-``k`` item IDs per query text over ``items`` (index built at ``index_dir``).

    Starts the JVM (Pyserini); the trainer itself only consumes the returned mapping.
    """
    from tandem.jvm import ensure_jvm

    ensure_jvm()
    from tandem.sparse import SparseRetriever, build_index

    if k < 1:
        raise InvalidInput(f"`k` must be >= 1, got {k}")
    build_index(items, index_dir)
    unique = sorted(set(queries))
    out: dict[str, list[str]] = {}
    with SparseRetriever(index_dir, writable=False) as bm25:
        for start in range(0, len(unique), 256):
            chunk = unique[start : start + 256]
            for q, hits in zip(chunk, bm25.retrieve(chunk, k), strict=True):
                out[q] = [h.item_id for h in hits]
    return out


def ranking_terms(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    logits: torch.Tensor,
    rows: Sequence[int],
    kinds: Sequence[tuple[str, float, Sequence[Sequence[int]]]],
    target_ids: torch.Tensor,
    pad_id: int,
    loss: str,
    margin: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``Σ_kind λ_kind · ranking_loss(s⁺, s⁻_kind)`` for the query→id ``rows`` of a batch.

    ``logits`` are the batch's teacher-forced logits (the positives' scores come from
    them); ``kinds`` holds ``(name, λ, negatives per row)``. Every negative ID is scored
    by one extra teacher-forced pass over all of them at once; ``target_ids[item]`` is an
    item's ID tokens + EOS. Returns the weighted sum and each kind's unweighted loss.
    """
    import torch

    from tandem.generative.model import sequence_logprob
    from tandem.training.objectives import ranking_loss

    zero = logits.new_zeros((), dtype=torch.float32)
    flat = [(r, item, k, j) for k, (_, _, negs) in enumerate(kinds) for r, row in enumerate(negs)
            for j, item in enumerate(row)]
    if not rows or not flat:
        return zero, {}
    dev = inputs["input_ids"].device
    src = torch.tensor([rows[r] for r, _, _, _ in flat], device=dev)
    tgt = target_ids[torch.tensor([item for _, item, _, _ in flat])].to(dev)
    dec = torch.cat([torch.full((len(flat), 1), pad_id, dtype=torch.long, device=dev), tgt[:, :-1]], dim=1)
    neg_logits = model(input_ids=inputs["input_ids"][src], attention_mask=inputs["attention_mask"][src],
                       decoder_input_ids=dec).logits
    neg_lp = sequence_logprob(neg_logits, tgt)
    row_idx = torch.tensor(list(rows), device=dev)
    pos = sequence_logprob(logits[row_idx], inputs["labels"][row_idx])
    total = zero
    parts: dict[str, float] = {}
    for k, (name, weight, negs) in enumerate(kinds):
        sel = [f for f, (_, _, kk, _) in enumerate(flat) if kk == k]
        if not sel:
            continue
        width = max(len(n) for n in negs)
        r_i = torch.tensor([flat[f][0] for f in sel], device=dev)
        c_i = torch.tensor([flat[f][3] for f in sel], device=dev)
        mat = neg_lp.new_zeros((len(rows), width)).index_put((r_i, c_i), neg_lp[torch.tensor(sel, device=dev)])
        valid = torch.zeros((len(rows), width), dtype=torch.bool, device=dev)
        valid[r_i, c_i] = True
        term = ranking_loss(pos, mat, valid, loss, margin)
        total = total + weight * term
        parts[f"rank_{name}"] = float(term.detach())
    return total, parts
