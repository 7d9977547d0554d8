"""``tandem eval --system hybrid``: the gateway's own query path, evaluated as a retriever.

:class:`HybridRetriever` puts the :class:`~tandem.search.orchestrator.HybridSearcher` (intents →
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
        from tandem.search.request import SearchRequest

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
    ``--model``, assembled as the gateway's searcher is (:func:`~tandem.search.build.build_searcher`:
    the same intents, fusion choice and catalog rule; no cache).

    Options (``spec.options``): ``intent_model`` (a ``tandem intent fit`` folder: sub-intents),
    ``fusion`` (auto, rrf, minmax, zscore, learned — ``auto`` picks as ``tandem serve`` does, with the
    fusion model the registry promoted with ``--model`` when that is a registry base-model folder),
    ``fusion_model`` (LambdaMART JSON for learned fusion), ``candidates`` (hits per source and
    intent, the generative source's included, default 100: :meth:`SearchConfig.at_depth`),
    ``generative_depth`` (the generative source's hits per intent, default ``candidates``),
    ``sources`` (``bm25,generative`` by default; ``bm25`` alone evaluates intents and fusion
    without a model).
    """
    from dataclasses import replace
    from pathlib import Path

    from tandem.errors import InvalidInput
    from tandem.eval.systems import HYBRID_OPTIONS, build_system
    from tandem.search.build import SearcherSpec, build_searcher
    from tandem.search.catalog import InMemoryCatalog
    from tandem.search.request import SearchConfig

    names = [n.strip() for n in str(spec.options.get("sources", "bm25,generative")).split(",") if n.strip()]
    unknown = set(names) - {"bm25", "generative"}
    if not names or unknown:
        raise InvalidInput(f"`sources` must name bm25 and/or generative, got {spec.options.get('sources')!r}")
    lookup = None
    if spec.catalog is not None:
        from tandem.catalog.loaders import load_items

        lookup = InMemoryCatalog(load_items(spec.catalog, format=spec.catalog_format).items)
    fusion_model = spec.options.get("fusion_model")
    intent_model = spec.options.get("intent_model")
    # The sources get the options that are not the hybrid's own (bm25's k1, b, fields...).
    child = replace(spec, options={k: v for k, v in spec.options.items() if k not in HYBRID_OPTIONS})
    sources = [build_system(n, child) for n in names]
    try:
        # The gateway's assembly; `auto` with a --model folder of the registry takes the fusion
        # model promoted with it, as serve does.
        searcher = build_searcher(SearcherSpec(
            sources=sources, fusion=str(spec.options.get("fusion", "auto")),
            fusion_model=Path(fusion_model) if fusion_model else None,
            model=spec.model if "generative" in names else None,
            intent_model=Path(intent_model) if intent_model else None, catalog=lookup,
            config=SearchConfig.at_depth(int(spec.options.get("candidates", 100)),
                                         int(spec.options["generative_depth"]) if "generative_depth" in spec.options
                                         else None)))
    except BaseException:
        for source in sources:
            source.close()
        raise
    return HybridRetriever(searcher)
