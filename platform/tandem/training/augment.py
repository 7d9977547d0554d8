"""Data augmentation for alignment (seed chapter, section 5.3.3): query rewriting,
document perturbation, and a mixing cap.

* :func:`rewrite_query`: drop a word, swap two adjacent words, or a typo — the noise real
  search-box queries carry, so query→id does not depend on exact wording.
* :func:`perturb_document`: reorder the phrases of an item text, or replace a word by a
  catalog co-occurrence substitute (:func:`tandem.eval.robustness.cooccurrence_synonyms`).
* :func:`mix_augmented`: replaces at most ``share`` of the examples by augmented copies,
  so augmented samples never outnumber that share however many are available.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from tandem.errors import InvalidInput
from tandem.eval.robustness import typo_query

T = TypeVar("T")

QUERY_OPS = ("drop", "swap", "typo")
_PHRASE_SPLIT = re.compile(r"\s*(?:,|;|\s-\s|\(|\)|\s+with\s+|\s+for\s+)\s*", re.IGNORECASE)


def rewrite_query(query: str, rng: np.random.Generator, ops: Sequence[str] = QUERY_OPS) -> str:
    """One rewrite of ``query`` by an op drawn from ``ops``; ops that cannot apply (drop or
    swap on one word) fall back to a typo, so the result always differs from the input
    (unless the query has no character to edit)."""
    for op in ops:
        if op not in QUERY_OPS:
            raise InvalidInput(f"`ops` must be among {', '.join(QUERY_OPS)}, got {op!r}")
    words = query.split()
    op = ops[int(rng.integers(len(ops)))]
    if op == "drop" and len(words) > 1:
        i = int(rng.integers(len(words)))
        return " ".join(w for j, w in enumerate(words) if j != i)
    if op == "swap" and len(words) > 1 and len(set(words)) > 1:
        while True:
            i = int(rng.integers(len(words) - 1))
            if words[i] != words[i + 1]:
                break
        words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words)
    return typo_query(query, rng)


def perturb_document(text: str, rng: np.random.Generator,
                     substitutes: Mapping[str, Sequence[str]] | None = None) -> str:
    """Reorder ``text``'s phrases, or substitute one word from ``substitutes``.

    Substitution is tried first when ``substitutes`` covers a word of the text (half the
    time); otherwise the phrases (split at commas, dashes, parentheses, "with"/"for") are
    shuffled, or — for a one-phrase text — its words are rotated.
    """
    words = text.split()
    if substitutes:
        cands = [i for i, w in enumerate(words) if w.lower() in substitutes]
        if cands and rng.random() < 0.5:
            i = cands[int(rng.integers(len(cands)))]
            options = substitutes[words[i].lower()]
            words[i] = options[int(rng.integers(len(options)))]
            return " ".join(words)
    phrases = [p for p in _PHRASE_SPLIT.split(text) if p.strip()]
    if len(phrases) > 1:
        order = rng.permutation(len(phrases))
        if np.array_equal(order, np.arange(len(phrases))):
            order = np.roll(order, 1)
        return " ".join(phrases[i] for i in order)
    if len(words) > 1:
        k = int(rng.integers(1, len(words)))
        return " ".join(words[k:] + words[:k])
    return text


def mix_augmented(examples: Sequence[T], augment: Callable[[T, np.random.Generator], T | None], share: float,
                  rng: np.random.Generator) -> tuple[list[T], int]:
    """Replace ``floor(share · n)`` randomly chosen examples by ``augment(example)``.

    Returns the new list (same length, same order) and how many were replaced; ``augment``
    may return ``None`` to leave an example as it is, so the count is at most the cap.
    Replacing rather than adding keeps the epoch length, and the original of a replaced
    example reappears in other epochs (each epoch draws its own subset).
    """
    if not 0 <= share < 1:
        raise InvalidInput(f"`share` must be in [0, 1), got {share}")
    out = list(examples)
    cap = int(share * len(out))
    if cap == 0:
        return out, 0
    done = 0
    for i in np.sort(rng.choice(len(out), size=cap, replace=False)).tolist():
        new = augment(out[i], rng)
        if new is not None:
            out[i] = new
            done += 1
    return out, done
