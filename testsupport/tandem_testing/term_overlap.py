"""A small, genuine in-process retriever: TF-IDF term overlap over item text.

Used by tests and the all-in-one demo wherever a second source is needed before the
generative model exists. It ranks by the summed IDF of query terms an item contains, times
a saturating term-frequency factor — crude but a real ranking function, so fused results
in tests are computed, never canned.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from tandem.catalog.item import Item
from tandem.retriever import Hit, Retriever, validate_queries

_TOKEN = re.compile(r"[0-9a-z]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens."""
    return _TOKEN.findall(text.lower())


class TermOverlapRetriever(Retriever):
    """TF-IDF term-overlap retrieval over ``items`` (their :meth:`Item.text`).

    ``delay_s`` adds a fixed latency per call (to stand in for a slow model in deadline
    tests); ``version`` is what :meth:`version` reports and may be changed with
    :meth:`set_version` (a reload, as far as cache keys are concerned).
    """

    def __init__(self, items: Iterable[Item], name: str = "overlap", version: str = "1", delay_s: float = 0.0) -> None:
        self.name = name
        self.delay_s = delay_s
        self._version = version
        self._postings: dict[str, dict[str, int]] = defaultdict(dict)
        n_docs = 0
        for item in items:
            n_docs += 1
            for term, tf in Counter(tokenize(item.text())).items():
                self._postings[term][item.item_id] = tf
        self._idf = {t: math.log(1 + n_docs / len(p)) for t, p in self._postings.items()}
        self.calls = 0
        self.batch_sizes: list[int] = []
        self._mu = threading.Lock()

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """See :meth:`Retriever.retrieve`."""
        validate_queries(queries, k)
        with self._mu:
            self.calls += 1
            self.batch_sizes.append(len(queries))
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for q in queries:
            scores: dict[str, float] = defaultdict(float)
            for term in set(tokenize(q)):
                for item_id, tf in self._postings.get(term, {}).items():
                    scores[item_id] += self._idf[term] * tf / (tf + 1.0)
            ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
            out.append([Hit(item_id=i, score=s, source=self.name) for i, s in ranked])
        return out

    def version(self) -> str:
        """The version set at construction or by :meth:`set_version`."""
        return self._version

    def set_version(self, version: str) -> None:
        """Report a new version (as after re-opening an index)."""
        self._version = version


def from_jsonl(path: str, name: str = "generative") -> TermOverlapRetriever:
    """A :class:`TermOverlapRetriever` over an items JSONL file — a factory for
    ``tandem serve generative --factory tandem_testing.term_overlap:from_jsonl --factory-arg FILE``."""
    with open(path, encoding="utf-8") as fh:
        return TermOverlapRetriever((Item.model_validate_json(line) for line in fh if line.strip()), name=name)
