"""Vocabularies mined from catalog titles: brands, colours, materials, finishes, uses,
audiences and product types.

Home Depot-style titles follow a house style — ``<Brand> <modifiers> <product type> in
<colour/finish> with <feature>`` — which the miners exploit:

* **brands**: title-initial n-grams. A first token is a brand candidate when it starts at least
  ``min_count`` titles and at least half of its occurrences are title-initial (brands lead,
  common words do not); it is extended while one continuation dominates (``Hampton`` → ``Hampton
  Bay``, ``Home`` → ``Home Decorators Collection``).
* **colours / finishes / materials**: the seed lexicons, expanded by co-occurrence in the
  ``in <X>`` slot (multi-word phrases containing a seed word, and words conjoined with a seed
  as in ``Black and Chrome``) and by frequent ``<modifier> <material>`` compounds.
* **product types**: the head noun of each title (last word before ``in``/``with``/``for``/
  ``,``/``(``) and its frequent compound with the word before it (``ceiling fan``).
* **uses / audiences**: seeds, expanded by the ``for <X>`` slot.
Every phrase is stored token-stemmed (:func:`~tandem.intent.lexicon.stem`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tandem.intent.lexicon import (
    AUDIENCE, BRAND, COLOR, FINISH, MATERIAL, SEED_AUDIENCES, SEED_COLORS, SEED_FINISHES, SEED_MATERIALS,
    SEED_USES, STOPWORDS, TYPE, USE, normalize, stem, tokenize,
)

_SEEDS = SEED_COLORS | SEED_FINISHES | SEED_MATERIALS
_USE_TAILS = frozenset({"use", "area", "room", "space", "application", "applications"})
_BREAK = frozenset({"in", "with", "for", "and", "-", "(", ","})
_ALPHA = re.compile(r"^[a-z][a-z'&-]*[a-z]$")
#: Gazetteer priority when one phrase is in several vocabularies (the more specific wins).
PRIORITY = (FINISH, COLOR, BRAND, TYPE, MATERIAL, USE, AUDIENCE)


def phrase_key(words: Iterable[str]) -> str:
    """The lookup key of a phrase: stemmed tokens joined by spaces."""
    return " ".join(stem(w) for w in words)


@dataclass
class Vocabulary:
    """Phrases by label (stemmed keys) plus the price statistics the rules need."""

    phrases: dict[str, set[str]] = field(default_factory=dict)
    #: 33rd percentile of prices per product-type key, and ``""`` for the whole catalog.
    cheap_max: dict[str, float] = field(default_factory=dict)
    max_len: int = 4

    def labels_of(self, key: str) -> list[str]:
        """Labels whose vocabulary holds ``key``, most specific first."""
        return [lab for lab in PRIORITY if key in self.phrases.get(lab, ())]

    def longest_matches(self, words: Sequence[str]) -> list[str]:
        """Per token, the label of the longest vocabulary phrase covering it (``O`` if none)."""
        stems = [stem(w) for w in words]
        out = ["O"] * len(words)
        i = 0
        while i < len(words):
            for n in range(min(self.max_len, len(words) - i), 0, -1):
                labels = self.labels_of(" ".join(stems[i:i + n]))
                if labels:
                    out[i:i + n] = [labels[0]] * n
                    i += n
                    break
            else:
                i += 1
        return out

    def to_dict(self) -> dict:
        """JSON-ready form (sets become sorted lists)."""
        return {"phrases": {k: sorted(v) for k, v in sorted(self.phrases.items())},
                "cheap_max": self.cheap_max, "max_len": self.max_len}

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        """Inverse of :meth:`to_dict`."""
        return cls({k: set(v) for k, v in d["phrases"].items()}, dict(d["cheap_max"]), int(d["max_len"]))


def _words(title: str) -> list[str]:
    return [t.text for t in tokenize(normalize(title))]


def _mine_brands(titles: Sequence[list[str]], min_count: int) -> set[str]:
    first = Counter(t[0] for t in titles if t)
    total = Counter(w for t in titles for w in set(t))
    starts: dict[tuple[str, ...], Counter] = {}
    for t in titles:
        for n in range(1, min(4, len(t))):
            starts.setdefault(tuple(t[:n]), Counter())[t[n]] += 1
    brands = set()
    for w, c in first.items():
        if c < min_count or not _ALPHA.match(w) or w in STOPWORDS or c < 0.5 * total[w]:
            continue
        prefix: tuple[str, ...] = (w,)
        while len(prefix) < 4:
            nxt = starts.get(prefix)
            if not nxt:
                break
            word, n = nxt.most_common(1)[0]
            if n < 0.75 * sum(nxt.values()) or not _ALPHA.match(word) and word not in ("&",):
                break
            prefix = (*prefix, word)
        brands.add(phrase_key(prefix))
        if len(prefix) > 1 and total[w] <= 1.2 * c:  # "BEHR" alone too, not only "BEHR Premium Plus"
            brands.add(stem(w))
    return brands


def _slot(words: list[str], marker: str, stop: frozenset[str]) -> list[str] | None:
    """The phrase after the last ``marker`` up to a stop word or the end."""
    if marker not in words:
        return None
    i = len(words) - 1 - words[::-1].index(marker)
    out = []
    for w in words[i + 1:]:
        if w in stop:
            break
        out.append(w)
    return out if 0 < len(out) <= 4 else None


def _expand_attributes(titles: Sequence[list[str]], min_count: int, heads: set[str]) -> dict[str, set[str]]:
    seeds = {COLOR: SEED_COLORS, FINISH: SEED_FINISHES, MATERIAL: SEED_MATERIALS}
    vocab = {lab: {stem(w) for w in s} for lab, s in seeds.items()}
    slot: Counter[tuple[str, ...]] = Counter()
    for t in titles:
        p = _slot(t, "in", frozenset({"with", "for", "(", ","}))
        if p and all(_ALPHA.match(w) or w in ("and", "/") for w in p):
            slot[tuple(p)] += 1
    conj: Counter[str] = Counter()
    for key, c in slot.items():
        if c < min_count:
            continue
        parts = [list(g) for g in _split(key, {"and", "/"})]
        for part in parts:
            if len(part) > 3 or any(stem(w) in heads and w not in _SEEDS for w in part):
                continue  # "in Black Spiral Staircase Kit": a product, not an attribute
            for lab in (FINISH, COLOR, MATERIAL):  # a finish word makes the phrase a finish
                if any(w in seeds[lab] for w in part):
                    vocab[lab].add(phrase_key(part))
                    break
        known = [any(w in SEED_COLORS for w in part) for part in parts]
        if len(parts) > 1 and any(known):
            for part, k in zip(parts, known):
                if not k and len(part) == 1:
                    conj[part[0]] += c
    vocab[COLOR] |= {stem(w) for w, c in conj.items() if c >= 2}
    pairs = Counter((a, b) for t in titles for a, b in zip(t, t[1:]) if b in SEED_MATERIALS and _ALPHA.match(a))
    vocab[MATERIAL] |= {phrase_key(p) for p, c in pairs.items() if c >= max(min_count, 10) and p[0] not in STOPWORDS}
    return vocab


def _split(words: Sequence[str], seps: set[str]) -> Iterable[list[str]]:
    cur: list[str] = []
    for w in words:
        if w in seps:
            if cur:
                yield cur
            cur = []
        else:
            cur.append(w)
    if cur:
        yield cur


def head_phrase(words: list[str]) -> tuple[int, int] | None:
    """Token span ``[i, j)`` of a title's product-type head noun (one word), or ``None``."""
    end = next((i for i, w in enumerate(words) if w in _BREAK and i > 0), len(words))
    for i in range(end - 1, -1, -1):
        if _ALPHA.match(words[i]) and len(words[i]) >= 3 and words[i] not in STOPWORDS:
            return i, i + 1
    return None


def _mine_types(titles: Sequence[list[str]], brands: set[str], min_count: int) -> tuple[set[str], list[str | None]]:
    heads: Counter[str] = Counter()
    compounds: Counter[str] = Counter()
    per_title: list[tuple[str, str | None] | None] = []
    for t in titles:
        span = head_phrase(t)
        if span is None:
            per_title.append(None)
            continue
        i = span[0]
        head = stem(t[i])
        prev = stem(t[i - 1]) if i > 0 and _ALPHA.match(t[i - 1]) and t[i - 1] not in STOPWORDS else None
        heads[head] += 1
        if prev is not None and i > 1:  # i == 1: the word before is the brand's
            compounds[f"{prev} {head}"] += 1
        per_title.append((head, f"{prev} {head}" if prev else None))
    brand_first = {b.split()[0] for b in brands}
    seeds = {stem(w) for w in _SEEDS}
    types = {h for h, c in heads.items() if c >= min_count and h not in brands and h not in seeds}
    types |= {p for p, c in compounds.items() if c >= min_count and p.split()[1] in types and p not in brands
              and p.split()[0] not in seeds and p.split()[0] not in brand_first}
    keys = [None if x is None else (x[1] if x[1] in types else x[0] if x[0] in types else None) for x in per_title]
    return types, keys


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]


def mine_vocabulary(titles: Sequence[str], prices: Sequence[float | None] | None = None,
                    min_count: int = 3, cheap_quantile: float = 0.33) -> Vocabulary:
    """Mine a :class:`Vocabulary` from catalog titles (and prices, when the catalog has them)."""
    words = [_words(t) for t in titles]
    brands = _mine_brands(words, min_count)
    types, type_keys = _mine_types(words, brands, min_count)
    attrs = _expand_attributes(words, min_count, {t for t in types if " " not in t})
    types -= set().union(*attrs.values())
    uses = {stem(w) for w in SEED_USES}
    for t in words:
        p = _slot(t, "for", frozenset({"with", "in", "and", "(", ","}))
        if p and len(p) <= 2 and p[0] in SEED_USES and all(w in SEED_USES or w in _USE_TAILS for w in p):
            uses.add(phrase_key(p))
    phrases = {BRAND: brands - set().union(*attrs.values()), TYPE: types, USE: uses,
               AUDIENCE: {stem(w) for w in SEED_AUDIENCES}, **attrs}
    cheap: dict[str, float] = {}
    if prices is not None:
        priced = [(k, p) for k, p in zip(type_keys, prices, strict=True) if p is not None]
        if priced:
            cheap[""] = _percentile([p for _, p in priced], cheap_quantile)
            by_type: dict[str, list[float]] = {}
            for k, price in priced:
                if k is not None:
                    by_type.setdefault(k, []).append(price)
            cheap |= {k: _percentile(v, cheap_quantile) for k, v in by_type.items() if len(v) >= 10}
    return Vocabulary(phrases=phrases, cheap_max=cheap)
