"""A search's answer: :class:`ResultHit` and :class:`SearchResult`, and their cache encoding."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tandem.intent.base import Intent
from tandem.intent.filters import IntentFilter


@dataclass(slots=True)
class ResultHit:
    """One hit of a search result with its per-source provenance ``(source, rank, score)``."""

    item_id: str
    score: float
    title: str = ""
    provenance: list[tuple[str, int, float]] = field(default_factory=list)


@dataclass(slots=True)
class SearchResult:
    """A search's answer; ``degraded`` when some source failed and the rest answered."""

    hits: list[ResultHit]
    intents: list[Intent]
    versions: dict[str, str]
    degraded: bool = False
    degraded_reasons: list[str] = field(default_factory=list)
    cache_hit: bool = False
    took_ms: float = 0.0
    #: (source, intent, [(item_id, score), ...]) per retrieval, only for debug requests.
    debug_lists: list[tuple[str, str, list[tuple[str, float]]]] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        """JSON encoding for the cache (never pickle: the cache may be shared).

        Built field by field: :func:`dataclasses.asdict` deep-copies every value on the way
        and cost more than the rest of a cache fill together.
        """
        return json.dumps({
            "hits": [{"item_id": h.item_id, "score": h.score, "title": h.title, "provenance": h.provenance}
                     for h in self.hits],
            "intents": [_intent_json(i) for i in self.intents],
            "versions": self.versions, "degraded": self.degraded, "degraded_reasons": self.degraded_reasons,
            "cache_hit": self.cache_hit, "took_ms": self.took_ms, "debug_lists": self.debug_lists,
        }, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> SearchResult:
        """Inverse of :meth:`to_bytes`."""
        d: dict[str, Any] = json.loads(data)
        d["hits"] = [ResultHit(h["item_id"], h["score"], h["title"], [tuple(p) for p in h["provenance"]])
                     for h in d["hits"]]
        d["intents"] = [Intent(i["text"], i["kind"], i["weight"],
                               None if i.get("filter") is None else IntentFilter.from_dict(i["filter"]))
                        for i in d["intents"]]
        d["debug_lists"] = [(s, i, [tuple(h) for h in hs]) for s, i, hs in d["debug_lists"]]
        return cls(**d)


def _intent_json(i: Intent) -> dict[str, Any]:
    """An intent's cache form; ``filter`` only where set (an entry without it decodes as before)."""
    d: dict[str, Any] = {"text": i.text, "kind": i.kind, "weight": i.weight}
    if i.filter is not None:
        d["filter"] = i.filter.as_dict()
    return d


__all__ = ["ResultHit", "SearchResult"]
