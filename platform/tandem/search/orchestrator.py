"""The one hybrid query path: validate → cache → intents → retrievers in parallel → fusion →
filters → cache store.

The gRPC gateway, ``tandem search`` and evaluation all call :class:`HybridSearcher` (built by
:func:`tandem.search.build.build_searcher`); it knows only the
:class:`~tandem.retriever.Retriever` interface, so a local Lucene index, an in-process model
and a remote gRPC service are interchangeable. Intent decomposition and fusion are
strategies (:class:`~tandem.intent.base.IntentDecomposer`, :class:`~tandem.fusion.Fuser`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from tandem.cache import ResultCache, cache_key
from tandem.errors import InvalidInput, Unavailable
from tandem.fusion import RRF, FusedHit, Fuser, RankedList
from tandem.fusion.scoring import candidate_ids, score_candidates
from tandem.intent.base import FILTER_INTENT, Intent, IntentDecomposer, WholeQuery
from tandem.personal.features import ProfileReader, merge_scores
from tandem.retriever import Retriever, refresh_sources
from tandem.search.breakers import SourceBreakers
from tandem.search.catalog import ItemLookup, ItemMeta, intent_filters, known_hits, matches
from tandem.search.memo import CacheMiss, ResultMemo
from tandem.search.request import SearchConfig, SearchRequest, validate_request
from tandem.search.results import ResultHit, SearchResult
from tandem.search.sources import gather


class HybridSearcher:
    """Runs every retriever in parallel for every intent and fuses what comes back in time.

    A source that fails or misses its deadline is left out and the result is marked
    ``degraded`` (with a reason); if no source answers, :class:`Unavailable` is raised.
    Degraded results are not cached, so recovery shows at once.
    """

    def __init__(
        self,
        retrievers: Sequence[Retriever],
        *,
        fuser: Fuser | None = None,
        intents: IntentDecomposer | None = None,
        cache: ResultCache | None = None,
        catalog: ItemLookup | None = None,
        config: SearchConfig | None = None,
        personal: ProfileReader | None = None,
    ) -> None:
        names = [r.name for r in retrievers]
        if not retrievers:
            raise InvalidInput("`retrievers` is empty; a searcher needs at least one source")
        if len(set(names)) != len(names):
            raise InvalidInput(f"`retrievers` names must be unique, got {names}")
        self.retrievers = list(retrievers)
        self.fuser = fuser or RRF()
        self.intents = intents or WholeQuery()
        self.cache = cache
        self.catalog = catalog
        self.config = config or SearchConfig()
        self.personal = personal  # user profiles (tandem.personal): item scores for a fuser that uses them
        self._pool = ThreadPoolExecutor(max_workers=self.config.max_workers, thread_name_prefix="tandem-search")
        self._memo = ResultMemo(cache, self.config)
        self.breakers = SourceBreakers(names, self.config.breaker_failures, self.config.breaker_reset_s)

    def versions(self) -> dict[str, str]:
        """Version of each source plus the intent and fusion strategies (all part of cache keys)."""
        v = {r.name: r.version() for r in self.retrievers}
        v["intents"] = self.intents.version()
        v["fusion"] = self.fuser.version()
        return v

    def cached(self, request: SearchRequest) -> SearchResult | CacheMiss:
        """Validate ``request`` and answer it from the cache when that costs one non-blocking
        read (an in-process cache); otherwise the :class:`CacheMiss` to hand to :meth:`search`.

        Cheap enough for an event loop, which then sends only misses to a thread (the gateway
        servicer). Raises :class:`InvalidInput` naming the offending field.
        """
        started = time.monotonic()
        return self._memo.peek(self._miss(request), started)

    def search(self, request: SearchRequest | CacheMiss, deadline_s: float | None = None) -> SearchResult:
        """Answer ``request`` (or a miss from :meth:`cached`) within ``deadline_s`` seconds
        (default: the configured budget)."""
        started = time.monotonic()
        budget = self.config.deadline_s if deadline_s is None else deadline_s
        deadline = started + budget
        miss = request if isinstance(request, CacheMiss) else self._miss(request)
        result, locked = self._memo.claim(miss, deadline)
        if result is not None:
            result.cache_hit = True
            result.took_ms = (time.monotonic() - started) * 1000
            return result
        try:
            result = self._compute(miss, deadline)
        except BaseException:
            self._memo.release(miss.key, locked)
            raise
        self._memo.store(miss.key, result, locked)
        result.took_ms = (time.monotonic() - started) * 1000
        return result

    def _miss(self, request: SearchRequest) -> CacheMiss:
        """Validate ``request`` and derive its cache key (not read yet)."""
        query, top_k = validate_request(request, self.config)
        if request.filters and self.catalog is None:
            raise Unavailable("`filters` need item metadata, but this searcher was built without a catalog")
        versions = self.versions()
        filters = [asdict(f) for f in request.filters]
        params: dict[str, Any] = {"top_k": top_k, "debug": request.debug}
        if self.personal is not None and request.user_id:  # a personalised answer is the user's own
            params["user"] = request.user_id
        key = cache_key(query, params, versions, filters)
        return CacheMiss(request, query, top_k, versions, key)

    def _compute(self, miss: CacheMiss, deadline: float) -> SearchResult:
        request, query, top_k = miss.request, miss.query, miss.top_k
        reasons: list[str] = []
        try:
            all_intents = self.intents.decompose(query)
        except InvalidInput:
            raise
        except Exception as exc:  # noqa: BLE001 - an intent outage degrades to the whole query
            reasons.append(f"intents: {type(exc).__name__}: {exc}"[:300])
            all_intents = [Intent(text=query)]
        implied = intent_filters(all_intents) if self.catalog is not None else []
        intents = [i for i in all_intents if i.kind != FILTER_INTENT] or [Intent(text=query)]
        depth = max(self.config.candidates, top_k)
        answers = gather(self.retrievers, [i.text for i in intents], depth, self.config.source_depth, self._pool,
                         deadline, self.config.reserve_s, self.breakers, reasons)
        if not answers:
            raise Unavailable("no source answered: " + "; ".join(reasons))
        lists = [RankedList(source=r.name, hits=hits, intent=intent.text, intent_weight=intent.weight,
                            intent_kind=intent.kind)
                 for r, per_intent in answers for intent, hits in zip(intents, per_intent, strict=True)]

        item_scores = None
        if self.fuser.score_names:  # e.g. learned fusion over generative log-probabilities of every candidate
            item_scores = score_candidates([r for r, _ in answers], self.fuser.score_names, query, lists, self._pool,
                                           deadline - self.config.reserve_s, reasons)
        if self.personal is not None and request.user_id:  # fail-open: no profile = today's ranking
            item_scores = merge_scores(item_scores, self.personal.scores(
                request.user_id, candidate_ids(lists), deadline - self.config.reserve_s))
        # With a catalog, fuse the whole depth: hits of items it no longer knows (deleted,
        # quarantined) are dropped before top_k is cut (tandem.search.catalog.known_hits).
        fused = self.fuser.fuse(lists, k=depth if request.filters or implied or self.catalog is not None else top_k,
                                item_scores=item_scores)
        meta: Mapping[str, ItemMeta] = {}
        if self.catalog is not None:
            fused, meta = known_hits(fused, self.catalog, None if request.filters or implied else top_k, reasons)
        if request.filters:
            fused = [h for h in fused if matches(meta.get(h.item_id), request.filters)]
        if implied:  # soft: an item without a price is kept (the catalog lacks the field for it)
            fused = [h for h in fused if (m := meta.get(h.item_id)) is None or m.price is None
                     or matches(m, implied)]
        fused = fused[:top_k]
        return SearchResult(
            hits=[self._hit(h, meta) for h in fused],
            intents=all_intents,
            versions=miss.versions,
            degraded=bool(reasons),
            degraded_reasons=reasons,
            debug_lists=[(rl.source, rl.intent, [(h.item_id, h.score) for h in rl.hits]) for rl in lists]
            if request.debug else [],
        )

    @staticmethod
    def _hit(h: FusedHit, meta: Mapping[str, ItemMeta]) -> ResultHit:
        m = meta.get(h.item_id)
        return ResultHit(item_id=h.item_id, score=h.score, title=m.title if m else "",
                         provenance=[(e.source, e.rank, e.score) for e in h.provenance])

    def reload(self, sources: Sequence[str] = ()) -> list[str]:
        """:meth:`~tandem.retriever.Retriever.refresh` the named sources (all when empty) that
        are :attr:`~tandem.retriever.Retriever.refreshable`; returns the names refreshed."""
        unknown = set(sources) - {r.name for r in self.retrievers}
        if unknown:
            raise InvalidInput(f"`sources` names unknown sources {sorted(unknown)}")
        return refresh_sources(self.retrievers, sources)

    def close(self) -> None:
        """Stop the thread pool (retrievers and cache are the caller's to close)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["HybridSearcher"]
