"""Diagnosing failed queries with the catalog vocabulary and the users' later clicks.

:class:`Vocabulary` counts the words of the catalog's titles. A failed query's words are
checked against it:

- **misspelling**: a word the catalog does not have lies one edit (insertion, deletion,
  substitution or adjacent swap — what the typo suite and most real typos do) from catalog
  words; it is replaced by the most frequent of them → a corrected query;
- **unknown term**: a word with no catalog word within one edit → its nearest catalog terms by
  character-trigram overlap (reported; the query is kept);
- **vocabulary gap**: every word is known and the search still failed → the items the same user
  clicked or bought later in the session (``session_s`` after the failure) are its answer.

One-edit candidates come from :class:`tandem.intent.spelling.Speller` (the same corrector the
intent decomposer's ``spelled`` sub-query uses).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tandem.intent.spelling import MIN_WORD_LEN, Speller, words

__all__ = ["MIN_WORD_LEN", "Diagnosis", "Vocabulary", "diagnose", "words"]


def _trigrams(w: str) -> set[str]:
    p = f"#{w}#"
    return {p[i:i + 3] for i in range(len(p) - 2)}


class Vocabulary(Speller):
    """Catalog words seen ``min_count`` times or more (what ``in`` tests), their one-edit
    corrections (:class:`~tandem.intent.spelling.Speller`) and a trigram index for
    :meth:`nearest`."""

    def __init__(self, texts: Iterable[str], min_count: int = 2) -> None:
        super().__init__(Counter(w for t in texts for w in words(t)), min_count)
        self._by_trigram: dict[str, list[str]] = defaultdict(list)
        for w in self.counts:
            if len(w) >= MIN_WORD_LEN - 1:
                for g in _trigrams(w):
                    self._by_trigram[g].append(w)

    def __contains__(self, word: object) -> bool:
        return word in self.counts

    def nearest(self, word: str, k: int = 3) -> list[str]:
        """The ``k`` catalog words sharing most character trigrams with ``word`` (Jaccard)."""
        grams = _trigrams(word)
        shared: Counter[str] = Counter(c for g in grams for c in self._by_trigram.get(g, ()))
        scored = [(n / len(grams | _trigrams(c)), self.counts[c], c) for c, n in shared.items()]
        return [c for _, _, c in sorted(scored, key=lambda t: (-t[0], -t[1], t[2]))[:k]]


@dataclass
class Diagnosis:
    """What one failed query (all its occurrences) was diagnosed as, and what was done."""

    query: str
    count: int
    reasons: dict[str, int]
    kind: str
    """``misspelling``, ``unknown_term``, ``vocabulary_gap`` or ``unresolved``."""
    correction: str = ""
    """The corrected query (misspellings)."""
    nearest: dict[str, list[str]] = field(default_factory=dict)
    """Per unknown word, its nearest catalog terms."""
    clicked: list[str] = field(default_factory=list)
    """Items the users clicked later in their sessions, most clicked first."""

    def action(self) -> str:
        """One line for the report."""
        if self.kind == "misspelling":
            return f"corrected to {self.correction!r}"
        if self.kind == "unknown_term":
            return "nearest catalog terms " + "; ".join(f"{w}: {', '.join(n) or '-'}" for w, n in self.nearest.items())
        if self.kind == "vocabulary_gap":
            return f"{len(self.clicked)} later-clicked items as targets"
        return "no correction, no later click"


def diagnose(query: str, vocab: Vocabulary, *, count: int = 1, reasons: Mapping[str, int] | None = None,
             clicked: Sequence[str] = ()) -> Diagnosis:
    """Diagnose one failed query (module docstring); ``clicked``: later clicks, most clicked first."""
    toks = words(query)
    fixed, nearest, changed = [], {}, False
    for w in toks:
        if w in vocab or len(w) < MIN_WORD_LEN or w.isdigit():
            fixed.append(w)
            continue
        cands = vocab.corrections(w)
        if cands:
            fixed.append(cands[0])
            changed = True
        else:
            fixed.append(w)
            nearest[w] = vocab.nearest(w)
    d = Diagnosis(query, count, dict(reasons or {}), "unresolved", clicked=list(clicked))
    if changed:
        d.kind, d.correction = "misspelling", " ".join(fixed)
        d.nearest = nearest
    elif nearest:
        d.kind, d.nearest = "unknown_term", nearest
    elif clicked:
        d.kind = "vocabulary_gap"
    return d
