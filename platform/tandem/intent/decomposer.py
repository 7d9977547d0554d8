"""The catalog-fitted intent decomposer: parse a query into typed sub-intents, turn them into
sub-queries and filter intents, persist as one JSON file.

Sub-queries (each retrieved separately and weighted in fusion):

* ``query`` — the query without its price phrase (weight 1);
* ``spelled`` — the query (sizes normalised) with misspelt words corrected to catalog words
  (:mod:`tandem.intent.spelling`: ``gcfi`` → ``gfci``), when a word needed it (0.8: a
  correction can be wrong, so the query as typed keeps the first place);
* ``normalized`` — the same with sizes in the catalog's spelling, when that differs (0.5);
* ``product_type`` — the product type alone, when the query says more than that (0.3);
* one per attribute (``brand``, ``color``, ``material``, ``finish``, ``size``, ``use``,
  ``audience``) joined with the product type (``delta faucet``), only when a type was found (0.3).

A price constraint becomes an intent of kind ``filter`` (weight 0) carrying a typed
:class:`~tandem.intent.filters.IntentFilter` (``max_price=50``; its text ``price<=50`` is for display
only) that the searcher applies after retrieval to items whose catalog entry has a price.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tandem.errors import CorruptArtifact, InvalidInput
from tandem.intent.lexicon import OTHER, PRICE, SIZE, TYPE, normalize, stem, tokenize
from tandem.intent.mining import Vocabulary, mine_vocabulary
from tandem.intent.rules import PriceConstraint, find_sizes, parse_price
from tandem.intent.spelling import Speller
from tandem.intent.tagger import Tagger
from tandem.intent.base import Intent, IntentDecomposer

FORMAT = "tandem.intent/1"
FILE = "intent.json"
#: Fusion weight of the ``spelled`` sub-query (module docstring).
SPELLED_WEIGHT = 0.8
ATTRIBUTE_ORDER = ("brand", "color", "material", "finish", "size", "use", "audience")


@dataclass(frozen=True, slots=True)
class Span:
    """A typed piece of the query."""

    label: str
    text: str
    start: int
    end: int


@dataclass
class ParsedQuery:
    """Everything the decomposer read from a query."""

    query: str
    spans: list[Span] = field(default_factory=list)
    price: PriceConstraint | None = None
    core: str = ""
    normalized: str = ""

    def of(self, label: str) -> list[Span]:
        """Spans with ``label``, left to right."""
        return [s for s in self.spans if s.label == label]


class CatalogIntentDecomposer(IntentDecomposer):
    """An :class:`IntentDecomposer` fitted on a catalog (see the module docstring)."""

    name = "catalog-intents"

    def __init__(self, vocab: Vocabulary, tagger: Tagger, *, max_intents: int = 4,
                 fingerprint: str = "", speller: Speller | None = None) -> None:
        if max_intents < 1:
            raise InvalidInput(f"`max_intents` must be >= 1, got {max_intents}")
        self.vocab = vocab
        self.tagger = tagger
        #: Corrects misspelt words into the ``spelled`` sub-query; ``None`` (files written
        #: before it existed) gives no such sub-query.
        self.speller = speller
        self.max_intents = max_intents
        self.fingerprint = fingerprint

    # ------------------------------------------------------------------ fitting and storage

    @classmethod
    def fit(cls, titles: Sequence[str], prices: Sequence[float | None] | None = None, *, min_count: int = 3,
            max_titles: int = 8000, max_intents: int = 4, seed: int = 0) -> CatalogIntentDecomposer:
        """Mine vocabularies from ``titles`` (and ``prices``) and train the tagger on them."""
        if not titles:
            raise InvalidInput("`titles` is empty; fitting needs a catalog")
        vocab = mine_vocabulary(titles, prices, min_count=min_count)
        words = [[t.text for t in tokenize(normalize(title))] for title in titles]
        tagger = Tagger.fit(words, vocab, max_titles=max_titles, seed=seed)
        speller = Speller.fit(titles)
        digest = hashlib.sha1(json.dumps([vocab.to_dict(), tagger.to_dict(), speller.to_dict()],
                                         sort_keys=True).encode()).hexdigest()
        return cls(vocab, tagger, max_intents=max_intents, fingerprint=digest[:12], speller=speller)

    def save(self, directory: str | Path) -> Path:
        """Write ``intent.json`` into ``directory`` atomically; returns its path."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "fingerprint": self.fingerprint, "max_intents": self.max_intents,
                   "vocabulary": self.vocab.to_dict(), "tagger": self.tagger.to_dict()}
        if self.speller is not None:
            payload["spelling"] = self.speller.to_dict()
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".intent-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, separators=(",", ":"))
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; services may run as another user
        os.replace(tmp, d / FILE)
        return d / FILE

    @classmethod
    def load(cls, path: str | Path) -> CatalogIntentDecomposer:
        """Load from a directory written by :meth:`save` (or the ``intent.json`` itself)."""
        p = Path(path)
        p = p / FILE if p.is_dir() else p
        if not p.is_file():
            raise InvalidInput(f"`path` {path} holds no {FILE}; fit one with `tandem intent fit`")
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorruptArtifact(f"{p} is not valid JSON: {exc}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise CorruptArtifact(f"{p} has format {got!r}; this build reads {FORMAT!r}")
        try:
            speller = Speller.from_dict(d["spelling"]) if "spelling" in d else None
            return cls(Vocabulary.from_dict(d["vocabulary"]), Tagger.from_dict(d["tagger"]),
                       max_intents=int(d["max_intents"]), fingerprint=str(d["fingerprint"]), speller=speller)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptArtifact(f"{p} is incomplete: {type(exc).__name__}: {exc}") from None

    def version(self) -> str:
        """``catalog-intents:<fingerprint>:<max_intents>`` (part of the searcher's cache keys)."""
        return f"{self.name}:{self.fingerprint}:{self.max_intents}"

    # ------------------------------------------------------------------ parsing

    def parse(self, query: str) -> ParsedQuery:
        """Typed spans, the price constraint and the text sub-queries of ``query``."""
        q = normalize(query)
        tokens = tokenize(q)
        ruled: dict[int, str] = {}
        sizes = find_sizes(q)
        for i, t in enumerate(tokens):
            if any(s.start <= t.start < s.end for s in sizes):
                ruled[i] = SIZE
        words = [t.text for t in tokens]
        tags = self.tagger.tag(words, self.vocab) if words else []
        price = parse_price(q, None)
        if price is not None and price.relative:
            price = parse_price(q, self._cheap_max(words, tags))
        if price is not None:
            for i, t in enumerate(tokens):
                if price.start <= t.start < price.end:
                    ruled[i] = PRICE
        labels = [ruled.get(i, tag) for i, tag in enumerate(tags)]
        spans: list[Span] = []
        i = 0
        while i < len(tokens):
            j = i + 1
            while j < len(tokens) and labels[j] == labels[i] and labels[i] not in (OTHER, SIZE):
                j += 1
            if labels[i] != OTHER:
                spans.append(Span(labels[i], q[tokens[i].start:tokens[j - 1].end], tokens[i].start, tokens[j - 1].end))
            i = j
        for s in sizes:  # one span per size, with its canonical spelling as text
            spans = [x for x in spans if not (x.label == SIZE and s.start <= x.start < s.end)]
            spans.append(Span(SIZE, s.canonical.lower(), s.start, s.end))
        spans.sort(key=lambda s: s.start)
        core = " ".join((q[:price.start] + " " + q[price.end:]).split()) if price else q
        normalized = core
        for s in sorted(sizes, key=lambda s: -s.start):
            if price is None or not (price.start <= s.start < price.end):
                normalized = normalized.replace(q[s.start:s.end], s.canonical.lower(), 1)
        return ParsedQuery(q, spans, price, core or q, normalized or core or q)

    def _cheap_max(self, words: list[str], tags: list[str]) -> float | None:
        cheap = self.vocab.cheap_max
        typed = [stem(w) for w, t in zip(words, tags) if t == TYPE]
        for n in (2, 1):
            for i in range(len(typed) - n, -1, -1):
                key = " ".join(typed[i:i + n])
                if key in cheap:
                    return cheap[key]
        return cheap.get("")

    def decompose(self, query: str) -> list[Intent]:
        """Sub-queries, best first, then at most one ``filter`` intent (see the module docstring)."""
        p = self.parse(query)
        intents = [Intent(text=p.core, kind="query", weight=1.0)]
        spelled = self.speller.correct(p.normalized) if self.speller is not None else p.normalized
        if spelled != p.normalized:
            intents.append(Intent(text=spelled, kind="spelled", weight=SPELLED_WEIGHT))
        if p.normalized != p.core:
            intents.append(Intent(text=p.normalized, kind="normalized", weight=0.5))
        types = p.of(TYPE)
        typed = " ".join(s.text for s in types)
        others = [s for s in p.spans if s.label not in (TYPE, PRICE)]
        if typed and others:
            intents.append(Intent(text=typed, kind=TYPE, weight=0.3))
            for label in ATTRIBUTE_ORDER:
                for s in p.of(label):
                    intents.append(Intent(text=f"{s.text} {typed}", kind=label, weight=0.3))
        seen: set[str] = set()
        unique: list[Intent] = []
        for i in intents:  # first of each text, in order
            if i.text not in seen:
                seen.add(i.text)
                unique.append(i)
        unique = unique[: self.max_intents]
        price = p.price.filter() if p.price is not None else None
        if price is not None:
            unique.append(Intent.of_filter(price))
        return unique


def load_decomposer(path: str | Path) -> CatalogIntentDecomposer:
    """:meth:`CatalogIntentDecomposer.load` (a factory for ``tandem serve intent --factory``)."""
    return CatalogIntentDecomposer.load(path)
