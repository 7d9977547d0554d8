"""Spelling correction against the catalog's own words: ``gcfi`` → ``gfci``, ``padtio`` → ``patio``.

Home Depot queries are typed by people in a hurry: 151 of the 1,234 dev queries hold a word
that no title has and that lies one edit from a title word (what :meth:`Speller.correct`
fixes). BM25 finds nothing for such a word and the encoder's word pieces split it into
unrelated pieces. :class:`Speller` corrects
those words (and only those) to the most frequent catalog word one edit away (insertion,
deletion, substitution or adjacent swap), which the decomposer turns into a ``spelled``
sub-query (:mod:`tandem.intent.decomposer`) and the failed-query diagnosis into a correction
(:mod:`tandem.failed.diagnose`).

A word is left alone when any title has it — whole or as a part of ``jeld-wen`` or ``2x4``
style words — or has it without a plural ending (``pruners``), when it is shorter than
:data:`MIN_WORD_LEN` letters, or when it holds a digit (sizes, model numbers and codes look
like typos and are not). Corrections target words seen in at least ``min_count`` titles, so a
one-off typo in a title does not become a correction target.

Candidates come from a deletes index (every word and its one-character deletions), so a
lookup costs a few dict probes, not a scan of the vocabulary.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from tandem.errors import InvalidInput

_WORD = re.compile(r"[a-z0-9]+(?:[./-][a-z0-9]+)*")
_PART = re.compile(r"[./-]")
MIN_WORD_LEN = 3
"""Shorter words are never corrected (sizes, units and codes are short and look like typos)."""
MIN_QUERY_WORD_LEN = 4
"""Query words shorter than this stay as typed in :meth:`Speller.correct` (``saud`` is as likely
``sand`` as ``saw``; a three-letter word one edit from many catalog words is a coin toss)."""


def words(text: str) -> list[str]:
    """Lower-case word tokens (``3/4``, ``2x4`` and ``18-volt`` stay whole)."""
    return _WORD.findall(text.lower())


def deletes(w: str) -> set[str]:
    """``w`` with one character deleted, every way."""
    return {w[:i] + w[i + 1:] for i in range(len(w))}


def one_edit(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` differ by exactly one insertion, deletion, substitution or adjacent swap."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def _singular(w: str) -> list[str]:
    return [w[:-1], w[:-2]] if w.endswith("es") else [w[:-1]] if w.endswith("s") else []


class Speller:
    """Catalog words with their title counts and a one-edit candidate index (module docstring).

    ``counts``: every catalog word (as :func:`words` splits titles) and the number of its
    occurrences; words with fewer than ``min_count`` are known but never a correction.
    """

    def __init__(self, counts: Mapping[str, int], min_count: int = 2) -> None:
        if min_count < 1:
            raise InvalidInput(f"`min_count` must be >= 1, got {min_count}")
        self.min_count = min_count
        self.all_counts = dict(counts)
        self.counts = {w: c for w, c in self.all_counts.items() if c >= min_count}
        self._known = set(self.all_counts) | {p for w in self.all_counts for p in _PART.split(w) if p}
        self._by_delete: dict[str, list[str]] = {}
        for w in self.counts:
            if len(w) >= MIN_WORD_LEN - 1:
                for d in (w, *deletes(w)):
                    self._by_delete.setdefault(d, []).append(w)

    @classmethod
    def fit(cls, titles: Iterable[str], min_count: int = 2) -> Speller:
        """Count the words of ``titles``."""
        return cls(Counter(w for t in titles for w in words(t)), min_count)

    def known(self, word: str) -> bool:
        """Whether a title has ``word`` (whole, as a part, or without its plural ending)."""
        return word in self._known or any(s in self._known for s in _singular(word))

    def corrections(self, word: str) -> list[str]:
        """Catalog words (seen ``min_count`` times or more) one edit from ``word``, most frequent first."""
        cands = set(self._by_delete.get(word, ()))
        for d in deletes(word):
            cands.update(self._by_delete.get(d, ()))
        return sorted((c for c in cands if one_edit(word, c)), key=lambda c: (-self.counts[c], c))

    def correct(self, text: str) -> str:
        """``text`` (lower-cased, whitespace-split) with every unknown all-letter word of
        :data:`MIN_QUERY_WORD_LEN` letters or more replaced by its best correction; ``text``
        lower-cased and re-joined when nothing needed correcting."""
        out = []
        for w in text.lower().split():
            if len(w) >= MIN_QUERY_WORD_LEN and w.isalpha() and not self.known(w):
                fixed = self.corrections(w)
                w = fixed[0] if fixed else w
            out.append(w)
        return " ".join(out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what :meth:`from_dict` reads back)."""
        return {"min_count": self.min_count, "counts": dict(sorted(self.all_counts.items()))}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Speller:
        """Inverse of :meth:`to_dict`; a malformed mapping raises ``TypeError``/``KeyError``/``ValueError``."""
        counts = d["counts"]
        if not isinstance(counts, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in counts.items()):
            raise TypeError("`counts` must map words to integer counts")
        return cls(counts, int(d["min_count"]))
