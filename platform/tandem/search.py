"""The one hybrid query path: validate → cache → intents → retrievers in parallel → fusion →
filters → cache store.

The gRPC gateway, ``tandem search`` and evaluation all call :class:`HybridSearcher`; it knows
only the :class:`~tandem.retriever.Retriever` interface, so a local Lucene index, an
in-process model and a remote gRPC service are interchangeable. Intent decomposition and
fusion are strategies (:class:`IntentDecomposer`, :class:`~tandem.fusion.Fuser`).
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from prometheus_client import Histogram
from pydantic import BaseModel, ConfigDict, Field

from tandem.cache import ResultCache, cache_key, normalize_query
from tandem.catalog.item import Item
from tandem.errors import InvalidInput, Unavailable
from tandem.fusion import RRF, FusedHit, Fuser, RankedList
from tandem.fusion.scoring import score_candidates
from tandem.retriever import Hit, Retriever, refresh_sources
from tandem.search_breakers import SourceBreakers
from tandem.search_known import known_hits

FILTER_FIELDS = ("brand", "category", "price")
#: Kind of an :class:`Intent` that constrains instead of retrieving: text ``price>=A price<=B``.
FILTER_INTENT = "filter"

SOURCE_LATENCY = Histogram(
    "tandem_source_latency_seconds", "Retriever call latency seen by the hybrid searcher, by source and outcome.",
    ["source", "outcome"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def _timed(source: str, fn, *args: Any) -> Any:
    started = time.perf_counter()
    outcome = "error"
    try:
        result = fn(*args)
        outcome = "ok"
        return result
    finally:
        SOURCE_LATENCY.labels(source, outcome).observe(time.perf_counter() - started)


class SearchConfig(BaseModel):
    """Limits and budgets of the hybrid query path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_top_k: int = Field(default=10, ge=1)
    """Hits returned when the request leaves ``top_k`` unset."""
    max_top_k: int = Field(default=1000, ge=1)
    """Largest ``top_k`` a request may ask for."""
    max_query_chars: int = Field(default=1024, ge=1)
    """Longest query accepted, in characters; longer ones are ``INVALID_ARGUMENT``."""
    candidates: int = Field(default=100, ge=1)
    """Hits asked from each source per intent (at least ``top_k``); fusion and filters work on these."""
    deadline_s: float = Field(default=2.0, gt=0)
    """Time budget of a search when the caller gives none."""
    reserve_s: float = Field(default=0.005, ge=0)
    """Part of the deadline kept for fusion, filters and the response after retrieval."""
    cache_ttl_s: float = Field(default=300.0, gt=0)
    """How long a result stays cached (jittered by the cache)."""
    lock_ttl_s: float = Field(default=2.0, gt=0)
    """Lifetime of the fill lock that stops concurrent misses from computing the same result."""
    stampede_wait_s: float = Field(default=0.25, ge=0)
    """How long a miss that lost the fill lock waits for the winner's result before computing."""
    max_workers: int = Field(default=16, ge=1)
    """Threads that run retrievers in parallel."""
    max_filters: int = Field(default=16, ge=0)
    """Most filters one request may carry (each costs a pass over every candidate)."""
    max_field_chars: int = Field(default=256, ge=1)
    """Longest filter string (``field``, ``prefix``, ``equals``) and ``user_id``, in characters."""
    source_depth: dict[str, int] = Field(default_factory=lambda: {"generative": 100})
    """Most hits asked of the named source per intent, whatever ``top_k``: a beam-search
    source's cost grows with its depth, and batched with others, one deep request would widen
    the beam of every query in its batch. Sources not named get ``max(candidates, top_k)``."""
    breaker_failures: int = Field(default=5, ge=0)
    """Failures in a row (errors or missed deadlines) after which a source is skipped, degraded
    ``circuit open``, for ``breaker_reset_s`` and then probed (:mod:`tandem.search_breakers`); 0 = never."""
    breaker_reset_s: float = Field(default=1.0, gt=0)
    """How long an open circuit skips its source before one search probes it (short: a restarted
    retriever is back in the answers within this time; one probe a second costs nothing)."""


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """One constraint on item metadata: ``price`` (``min``/``max``), ``category`` (``prefix``,
    a ``/``-separated path prefix) or ``brand`` (``equals``, case-insensitive)."""

    field: str
    min: float | None = None
    max: float | None = None
    prefix: str | None = None
    equals: str | None = None


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A search as clients express it; ``top_k = None`` means the configured default."""

    query: str
    top_k: int | None = None
    filters: tuple[FilterSpec, ...] = ()
    user_id: str = ""
    debug: bool = False


def _path(parts: Iterable[str]) -> str:
    return "/".join(p.strip().casefold() for p in parts if p.strip())


def check_filter_count(n: int, config: SearchConfig) -> None:
    """Refuse more than ``config.max_filters`` filters; cheap enough to run before converting them."""
    if n > config.max_filters:
        raise InvalidInput(f"`filters` has {n} entries; the limit is {config.max_filters}")


def validate_request(request: SearchRequest, config: SearchConfig) -> tuple[str, int]:
    """Check every field; returns the normalised query and the effective ``top_k``.

    Raises :class:`InvalidInput` naming the offending field in backticks.
    """
    if not isinstance(request.query, str):
        raise InvalidInput("`query` must be a string")
    if len(request.query) > config.max_query_chars:
        raise InvalidInput(f"`query` is {len(request.query)} characters; the limit is {config.max_query_chars}")
    query = normalize_query(request.query)
    if not query:
        raise InvalidInput("`query` is empty; it needs at least one non-space character")
    top_k = config.default_top_k if request.top_k is None else request.top_k
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= config.max_top_k:
        raise InvalidInput(f"`top_k` must be in 1..{config.max_top_k}, got {request.top_k}")
    check_filter_count(len(request.filters), config)
    if isinstance(request.user_id, str) and len(request.user_id) > config.max_field_chars:
        raise InvalidInput(f"`user_id` is {len(request.user_id)} characters; the limit is {config.max_field_chars}")
    for i, f in enumerate(request.filters):
        name = f"filters[{i}]"
        for part in ("field", "prefix", "equals"):
            value = getattr(f, part)
            if isinstance(value, str) and len(value) > config.max_field_chars:
                raise InvalidInput(f"`{name}.{part}` is {len(value)} characters; the limit is {config.max_field_chars}")
        if f.field not in FILTER_FIELDS:
            raise InvalidInput(f"`{name}.field` {f.field!r} is unknown; known fields: {', '.join(FILTER_FIELDS)}")
        given = {k for k in ("min", "max", "prefix", "equals") if getattr(f, k) is not None}
        allowed = {"price": {"min", "max"}, "category": {"prefix"}, "brand": {"equals"}}[f.field]
        if not given or given - allowed:
            want = " and/or ".join(f"`{name}.{a}`" for a in sorted(allowed))
            raise InvalidInput(f"`{name}` on {f.field!r} takes {want}, got {sorted(given) or 'nothing'}")
        if f.field == "price":
            for bound in ("min", "max"):
                v = getattr(f, bound)
                if v is not None and not v >= 0:  # also rejects NaN
                    raise InvalidInput(f"`{name}.{bound}` must be a number >= 0, got {v}")
            if f.min is not None and f.max is not None and f.min > f.max:
                raise InvalidInput(f"`{name}.min` ({f.min:g}) is greater than `{name}.max` ({f.max:g})")
        elif f.field == "category" and not _path(f.prefix.split("/")):
            raise InvalidInput(f"`{name}.prefix` is empty")
        elif f.field == "brand" and not f.equals.strip():
            raise InvalidInput(f"`{name}.equals` is empty")
    return query, top_k


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True, slots=True)
class ItemMeta:
    """What the query path needs to know about an item: its title and filterable fields."""

    title: str
    price: float | None = None
    category: tuple[str, ...] = ()
    brand: str | None = None


@runtime_checkable
class ItemLookup(Protocol):
    """Item metadata by id (titles for responses, fields for filters)."""

    def lookup(self, item_ids: Sequence[str]) -> Mapping[str, ItemMeta]:
        """Metadata of the known ids among ``item_ids`` (unknown ids are absent)."""


class InMemoryCatalog:
    """An :class:`ItemLookup` over items held in memory (the whole Home Depot set is ~10 MB)."""

    def __init__(self, items: Iterable[Item]) -> None:
        self._meta = {
            it.item_id: ItemMeta(title=it.title, price=it.price, category=tuple(it.category), brand=it.brand)
            for it in items
        }

    @classmethod
    def from_jsonl(cls, path: str) -> InMemoryCatalog:
        """Load ``Item`` records, one JSON object per line."""
        with open(path, encoding="utf-8") as fh:
            return cls(Item.model_validate_json(line) for line in fh if line.strip())

    def lookup(self, item_ids: Sequence[str]) -> Mapping[str, ItemMeta]:
        """See :meth:`ItemLookup.lookup`."""
        return {i: self._meta[i] for i in item_ids if i in self._meta}

    def __len__(self) -> int:
        return len(self._meta)


class StoredFieldsLookup:
    """An :class:`ItemLookup` over an index's stored documents (``SparseRetriever.documents``),
    so a server with a Lucene index needs no separate catalog file."""

    def __init__(self, source: Any) -> None:
        if not callable(getattr(source, "documents", None)):
            raise InvalidInput(f"`source` {type(source).__name__} has no `documents(item_ids)` method")
        self._source = source

    def lookup(self, item_ids: Sequence[str]) -> Mapping[str, ItemMeta]:
        """See :meth:`ItemLookup.lookup`."""
        out = {}
        for item_id, doc in self._source.documents(item_ids).items():
            category = doc.get("category") or ()
            if isinstance(category, str):  # the index stores the path joined by " > "
                category = [p.strip() for p in category.split(" > ")]
            try:
                price = float(doc["price"]) if doc.get("price") not in (None, "") else None
            except (TypeError, ValueError):
                price = None  # unparseable stored price: the item cannot satisfy a price filter
            out[item_id] = ItemMeta(title=doc.get("title", ""), price=price, category=tuple(category),
                                    brand=doc.get("brand"))
        return out


def _matches(meta: ItemMeta | None, filters: Sequence[FilterSpec]) -> bool:
    if meta is None:  # an item we know nothing about cannot be shown to satisfy a filter
        return False
    for f in filters:
        if f.field == "price":
            if meta.price is None or (f.min is not None and meta.price < f.min) \
                    or (f.max is not None and meta.price > f.max):
                return False
        elif f.field == "category":
            want, have = _path(f.prefix.split("/")).split("/"), _path(meta.category).split("/")
            if have[: len(want)] != want:
                return False
        elif f.field == "brand":
            if (meta.brand or "").casefold() != f.equals.strip().casefold():
                return False
    return True


# --------------------------------------------------------------------------- intents


@dataclass(frozen=True, slots=True)
class Intent:
    """One sub-intent of a query; each is retrieved separately and weighted in fusion."""

    text: str
    kind: str = "query"
    weight: float = 1.0


def intent_filters(intents: Sequence[Intent]) -> list[FilterSpec]:
    """Filters carried by ``filter`` intents (``price>=10 price<=50``); malformed terms are
    ignored, since a decomposer's constraint is a hint and must not fail the search."""
    out = []
    for i in intents:
        if i.kind != FILTER_INTENT:
            continue
        lo = hi = None
        for term in i.text.split():
            for op in (">=", "<="):
                name, sep, value = term.partition(op)
                if sep and name == "price":
                    try:
                        v = float(value)
                    except ValueError:
                        continue
                    if v >= 0:
                        lo, hi = (v, hi) if op == ">=" else (lo, v)
        if lo is not None or hi is not None:
            out.append(FilterSpec(field="price", min=lo, max=hi))
    return out


class IntentDecomposer(ABC):
    """Splits a query into sub-intents (product type, attributes, use, audience, price)."""

    name: str = "intents"

    @abstractmethod
    def decompose(self, query: str) -> list[Intent]:
        """At least one intent for a non-empty, normalised query."""

    def version(self) -> str:
        """Identifier of the decomposer (part of cache keys)."""
        return self.name


class WholeQuery(IntentDecomposer):
    """The query itself as the single intent — the behaviour before intent decomposition."""

    name = "whole-query"

    def decompose(self, query: str) -> list[Intent]:
        """``[Intent(query)]``."""
        return [Intent(text=query)]


# --------------------------------------------------------------------------- results


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
            "intents": [{"text": i.text, "kind": i.kind, "weight": i.weight} for i in self.intents],
            "versions": self.versions, "degraded": self.degraded, "degraded_reasons": self.degraded_reasons,
            "cache_hit": self.cache_hit, "took_ms": self.took_ms, "debug_lists": self.debug_lists,
        }, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> SearchResult:
        """Inverse of :meth:`to_bytes`."""
        d: dict[str, Any] = json.loads(data)
        d["hits"] = [ResultHit(h["item_id"], h["score"], h["title"], [tuple(p) for p in h["provenance"]])
                     for h in d["hits"]]
        d["intents"] = [Intent(**i) for i in d["intents"]]
        d["debug_lists"] = [(s, i, [tuple(h) for h in hs]) for s, i, hs in d["debug_lists"]]
        return cls(**d)


@dataclass(frozen=True, slots=True)
class PreparedSearch:
    """A validated request with its normalised query, ``top_k``, versions and cache key."""

    request: SearchRequest
    query: str
    top_k: int
    versions: dict[str, str]
    key: str


class RecentMemo:
    """A small, thread-safe, bounded map of recently derived values (least recently used out).

    Used to skip re-deriving the same thing for hot cache entries: decoding a cached result,
    building its response message.
    """

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise InvalidInput(f"`size` must be >= 1, got {size}")
        self._size = size
        self._items: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()
        self._mu = threading.Lock()

    def get(self, key: Hashable, source: Any) -> Any | None:
        """The value derived from ``source`` under ``key``; ``None`` if absent or derived from
        other data (``source`` neither the same object nor equal)."""
        with self._mu:
            hit = self._items.get(key)
            if hit is None or not (hit[0] is source or hit[0] == source):
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: Hashable, source: Any, value: Any) -> None:
        """Remember ``value`` as derived from ``source``."""
        with self._mu:
            self._items[key] = (source, value)
            self._items.move_to_end(key)
            if len(self._items) > self._size:
                self._items.popitem(last=False)


@runtime_checkable
class DeadlineAware(Protocol):
    """A retriever that can bound its own call (remote ones pass it as the gRPC deadline)."""

    def retrieve_within(self, queries: Sequence[str], k: int, timeout_s: float) -> list[list[Hit]]:
        """:meth:`Retriever.retrieve` that gives up after ``timeout_s``."""


class SerializedRetriever(Retriever):
    """Runs every call into ``inner`` (retrieve, version, documents, ...) under one lock.

    For sources that are not safe to call from several threads at once: the hybrid path and
    the services call retrievers from thread pools. Costs parallelism on that source only.
    """

    def __init__(self, inner: Retriever) -> None:
        self.inner = inner
        self.name = inner.name
        self._lock = threading.Lock()

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """``inner.retrieve`` under the lock."""
        with self._lock:
            return self.inner.retrieve(queries, k)

    def version(self) -> str:
        """``inner.version`` without the lock: the :class:`Retriever` contract makes it cheap and
        thread-safe, and event loops call it (waiting here for a long retrieval would stall them)."""
        return self.inner.version()

    def refresh(self) -> bool:
        """``inner.refresh`` under the lock."""
        with self._lock:
            return self.inner.refresh()

    @property
    def refreshable(self) -> bool:
        """Whether ``inner`` can refresh."""
        return self.inner.refreshable

    def close(self) -> None:
        """``inner.close`` under the lock."""
        with self._lock:
            self.inner.close()

    def __getattr__(self, attr: str) -> Any:
        # Optional capabilities (documents, reload, upsert...) keep working, under the lock.
        value = getattr(self.inner, attr)
        if not callable(value):
            return value

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return locked


# --------------------------------------------------------------------------- orchestrator


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
        self._pool = ThreadPoolExecutor(max_workers=self.config.max_workers, thread_name_prefix="tandem-search")
        self._decoded = RecentMemo()
        self.breakers = SourceBreakers(names, self.config.breaker_failures, self.config.breaker_reset_s)

    def versions(self) -> dict[str, str]:
        """Version of each source plus the intent and fusion strategies (all part of cache keys)."""
        v = {r.name: r.version() for r in self.retrievers}
        v["intents"] = self.intents.version()
        v["fusion"] = self.fuser.version()
        return v

    def prepare(self, request: SearchRequest) -> PreparedSearch:
        """Validate ``request`` and derive what both :meth:`lookup` and :meth:`search` need.

        Raises :class:`InvalidInput` naming the offending field.
        """
        query, top_k = validate_request(request, self.config)
        if request.filters and self.catalog is None:
            raise Unavailable("`filters` need item metadata, but this searcher was built without a catalog")
        versions = self.versions()
        filters = [asdict(f) for f in request.filters]
        key = cache_key(query, {"top_k": top_k, "debug": request.debug}, versions, filters)
        return PreparedSearch(request, query, top_k, versions, key)

    def lookup(self, prepared: PreparedSearch) -> SearchResult | None:
        """The cached answer of a prepared search, or ``None``: one cache read, no lock, no wait.

        With a non-blocking cache (``cache.blocking`` false) this is cheap enough to run on an
        event loop, which then hands only misses to a thread (see the gateway servicer).
        """
        if self.cache is None:
            return None
        started = time.monotonic()
        result = self._cached(prepared.key)
        if result is not None:
            result.cache_hit = True
            result.took_ms = (time.monotonic() - started) * 1000
        return result

    def search(self, request: SearchRequest | PreparedSearch, deadline_s: float | None = None, *,
               looked_up: bool = False) -> SearchResult:
        """Answer ``request`` (or one from :meth:`prepare`) within ``deadline_s`` seconds (default:
        the configured budget). ``looked_up``: the caller just missed in :meth:`lookup`, so the
        cache is not read again before the fill lock (nor counted twice as a miss)."""
        started = time.monotonic()
        budget = self.config.deadline_s if deadline_s is None else deadline_s
        deadline = started + budget
        prepared = request if isinstance(request, PreparedSearch) else self.prepare(request)
        request, query, top_k, versions, key = (prepared.request, prepared.query, prepared.top_k,
                                                 prepared.versions, prepared.key)

        result = self._cached(key) if self.cache and not looked_up else None
        locked = False
        if result is None:
            locked = self.cache is not None and self.cache.try_lock(key, self.config.lock_ttl_s)
            if self.cache is not None and not locked:
                result = self._wait_for_fill(key, deadline)
        if result is not None:
            result.cache_hit = True
            result.took_ms = (time.monotonic() - started) * 1000
            return result
        try:
            result = self._compute(query, top_k, request, versions, deadline)
        except BaseException:
            if locked:
                self.cache.unlock(key)
            raise
        if self.cache is not None and not result.degraded:
            if locked:
                self.cache.fill(key, result.to_bytes(), self.config.cache_ttl_s)
            else:
                self.cache.set(key, result.to_bytes(), self.config.cache_ttl_s)
        elif locked:
            self.cache.unlock(key)
        result.took_ms = (time.monotonic() - started) * 1000
        return result

    def _cached(self, key: str) -> SearchResult | None:
        """The cached result under ``key``: a fresh shallow copy, so callers may set
        ``cache_hit``/``took_ms``; its hits and lists are shared with other hits of the entry
        (hot entries are decoded once, see :class:`RecentMemo`) and must not be mutated."""
        data = self.cache.get(key)
        if data is None:
            return None
        result = self._decoded.get(key, data)
        if result is None:
            try:
                result = SearchResult.from_bytes(data)
            except (ValueError, KeyError, TypeError):  # an entry from an incompatible writer: recompute
                return None
            self._decoded.put(key, data, result)
        return replace(result)

    def _wait_for_fill(self, key: str, deadline: float) -> SearchResult | None:
        """Another caller is computing this key: poll briefly for its result."""
        until = min(deadline - self.config.reserve_s, time.monotonic() + self.config.stampede_wait_s)
        while time.monotonic() < until:
            time.sleep(0.002)
            result = self._cached(key)
            if result is not None:
                return result
        return None

    def _compute(self, query: str, top_k: int, request: SearchRequest,
                 versions: dict[str, str], deadline: float) -> SearchResult:
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
        texts = [i.text for i in intents]
        depth = max(self.config.candidates, top_k)
        caps = self.config.source_depth
        futures: dict[Future, Retriever] = {}
        active = [r for r in self.retrievers if self.breakers.allow(r.name, reasons)]
        # One source that bounds its own call (DeadlineAware) runs on this thread: a thread
        # hand-off less per search, which matters under GIL contention.
        inline = next((r for r in reversed(active) if hasattr(r, "retrieve_within")), None)
        timeout = max(0.0, deadline - time.monotonic() - self.config.reserve_s)
        budget_ms = timeout * 1000
        for r in active:
            if r is inline:
                continue
            k = min(depth, caps.get(r.name, depth))
            if hasattr(r, "retrieve_within"):  # a remote call ends at the deadline instead of running on
                futures[self._pool.submit(_timed, r.name, r.retrieve_within, texts, k, max(timeout, 0.001))] = r
            else:
                futures[self._pool.submit(_timed, r.name, r.retrieve, texts, k)] = r
        if inline is not None:
            fut: Future = Future()
            k = min(depth, caps.get(inline.name, depth))
            try:
                fut.set_result(_timed(inline.name, inline.retrieve_within, texts, k, max(timeout, 0.001)))
            except Exception as exc:  # noqa: BLE001 - judged below with the pooled sources
                fut.set_exception(exc)
            futures[fut] = inline
        done, _ = wait(futures, timeout=max(0.0, deadline - time.monotonic() - self.config.reserve_s))
        self.breakers.settle({f: r.name for f, r in futures.items()}, done)

        lists: list[RankedList] = []
        answered: list[Retriever] = []
        for fut, r in futures.items():
            if fut not in done:
                fut.cancel()
                reasons.append(f"{r.name}: no answer within the deadline ({budget_ms:.0f} ms)")
                continue
            exc = fut.exception()
            if exc is not None:
                if isinstance(exc, InvalidInput):
                    raise exc
                reasons.append(f"{r.name}: {type(exc).__name__}: {exc}"[:300])
                continue
            answered.append(r)
            for intent, hits in zip(intents, fut.result(), strict=True):
                lists.append(RankedList(source=r.name, hits=hits, intent=intent.text, intent_weight=intent.weight,
                                        intent_kind=intent.kind))
        if not answered:
            raise Unavailable("no source answered: " + "; ".join(reasons))

        item_scores = None
        if self.fuser.score_names:  # e.g. learned fusion over generative log-probabilities of every candidate
            item_scores = score_candidates(answered, self.fuser.score_names, query, lists, self._pool,
                                           deadline - self.config.reserve_s, reasons)
        # With a catalog, fuse the whole depth: hits of items it no longer knows (deleted,
        # quarantined) are dropped before top_k is cut (tandem.search_known).
        fused = self.fuser.fuse(lists, k=depth if request.filters or implied or self.catalog is not None else top_k,
                                item_scores=item_scores)
        meta: Mapping[str, ItemMeta] = {}
        if self.catalog is not None:
            fused, meta = known_hits(fused, self.catalog, None if request.filters or implied else top_k, reasons)
        if request.filters:
            fused = [h for h in fused if _matches(meta.get(h.item_id), request.filters)]
        if implied:  # soft: an item without a price is kept (the catalog lacks the field for it)
            fused = [h for h in fused if (m := meta.get(h.item_id)) is None or m.price is None
                     or _matches(m, implied)]
        fused = fused[:top_k]
        return SearchResult(
            hits=[self._hit(h, meta) for h in fused],
            intents=all_intents,
            versions=versions,
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


__all__ = [
    "FILTER_INTENT", "DeadlineAware", "FilterSpec", "HybridSearcher", "InMemoryCatalog", "Intent", "IntentDecomposer",
    "ItemLookup", "ItemMeta", "PreparedSearch", "RecentMemo", "ResultHit", "SearchConfig", "SearchRequest", "SearchResult", "SerializedRetriever",
    "StoredFieldsLookup",
    "WholeQuery",
    "check_filter_count", "intent_filters", "validate_request",
]
