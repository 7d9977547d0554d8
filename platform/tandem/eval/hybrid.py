"""``tandem eval --system hybrid``: the gateway's own query path, evaluated as a retriever.

:class:`HybridRetriever` puts the :class:`~tandem.search.HybridSearcher` (intents →
retrievers in parallel → fusion → filters) behind the :class:`~tandem.retriever.Retriever`
interface, so evaluation measures exactly what the gateway serves — one code path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tandem.retriever import Hit, Retriever, validate_queries


class HybridRetriever(Retriever):
    """Each query goes through ``searcher.search``; hits carry the fused score."""

    name = "hybrid"

    def __init__(self, searcher: Any, deadline_s: float = 600.0) -> None:
        self.searcher = searcher
        #: Evaluation measures quality, not latency: a generous deadline so no source is cut off.
        self.deadline_s = deadline_s

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        from tandem.errors import Unavailable
        from tandem.search import SearchRequest

        validate_queries(queries, k)
        out: list[list[Hit]] = []
        for q in queries:
            result = self.searcher.search(SearchRequest(q, top_k=k), deadline_s=self.deadline_s)
            if result.degraded:
                raise Unavailable(f"hybrid search degraded during evaluation: {result.degraded_reasons}")
            out.append([Hit(h.item_id, h.score, self.name) for h in result.hits])
        return out

    def version(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.searcher.versions().items()))

    def close(self) -> None:
        self.searcher.close()
        for r in self.searcher.retrievers:
            r.close()


def hybrid_system(spec: Any) -> HybridRetriever:
    """Factory for ``--system hybrid``: BM25 over ``--catalog`` plus the generative model of
    ``--model``, fused by the gateway's default fusion (no cache)."""
    from tandem.eval.systems import build_system
    from tandem.search import HybridSearcher, SearchConfig

    sources = [build_system("bm25", spec), build_system("generative", spec)]
    depth = int(spec.options.get("candidates", 100))
    return HybridRetriever(HybridSearcher(sources, config=SearchConfig(candidates=depth)))
