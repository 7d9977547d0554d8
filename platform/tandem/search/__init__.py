"""The hybrid query path, as a package of small modules:

* :mod:`~tandem.search.request` — :class:`SearchConfig`, :class:`FilterSpec`, :class:`SearchRequest`, validation;
* :mod:`~tandem.search.catalog` — item metadata (:class:`ItemLookup` and its implementations), filters,
  and the drop of items the live catalog no longer knows;
* :mod:`~tandem.search.results` — :class:`SearchResult` and its cache encoding;
* :mod:`~tandem.search.memo` — the result cache front (fill lock, stampede wait, the fast path);
* :mod:`~tandem.search.sources` — retrievers asked in parallel under a deadline;
* :mod:`~tandem.search.breakers` — per-source circuit breakers;
* :mod:`~tandem.search.orchestrator` — :class:`HybridSearcher`;
* :mod:`~tandem.search.build` — :func:`build_searcher`, the one assembly every caller uses.

The intent contract lives in :mod:`tandem.intent.base`. Names are re-exported here for users,
loaded on first use (so importing one submodule does not import the others); code in this
tree imports from the defining module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "FILTER_FIELDS": "request", "FilterSpec": "request", "SearchConfig": "request", "SearchRequest": "request",
    "check_filter_count": "request", "validate_request": "request",
    "InMemoryCatalog": "catalog", "ItemLookup": "catalog", "ItemMeta": "catalog", "StoredFieldsLookup": "catalog",
    "intent_filters": "catalog",
    "ResultHit": "results", "SearchResult": "results",
    "CacheMiss": "memo", "RecentMemo": "memo",
    "DeadlineAware": "sources", "SerializedRetriever": "sources",
    "HybridSearcher": "orchestrator",
    "SearcherSpec": "build", "build_searcher": "build",
}
_INTENT = ("FILTER_INTENT", "Intent", "IntentDecomposer", "WholeQuery")

if TYPE_CHECKING:
    from tandem.intent.base import FILTER_INTENT, Intent, IntentDecomposer, WholeQuery
    from tandem.search.build import SearcherSpec, build_searcher
    from tandem.search.catalog import InMemoryCatalog, ItemLookup, ItemMeta, StoredFieldsLookup, intent_filters
    from tandem.search.memo import CacheMiss, RecentMemo
    from tandem.search.orchestrator import HybridSearcher
    from tandem.search.request import (
        FILTER_FIELDS,
        FilterSpec,
        SearchConfig,
        SearchRequest,
        check_filter_count,
        validate_request,
    )
    from tandem.search.results import ResultHit, SearchResult
    from tandem.search.sources import DeadlineAware, SerializedRetriever


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"tandem.search.{_HOMES[name]}"), name)
    if name in _INTENT:
        return getattr(importlib.import_module("tandem.intent.base"), name)
    raise AttributeError(f"module 'tandem.search' has no attribute {name!r}")


#: Spelled out (not derived from the tables above) so linters and type checkers see the re-exports.
__all__ = [
    "CacheMiss", "DeadlineAware", "FILTER_FIELDS", "FILTER_INTENT", "FilterSpec", "HybridSearcher",
    "InMemoryCatalog", "Intent", "IntentDecomposer", "ItemLookup", "ItemMeta", "RecentMemo", "ResultHit",
    "SearchConfig", "SearchRequest", "SearchResult", "SearcherSpec", "SerializedRetriever", "StoredFieldsLookup",
    "WholeQuery", "build_searcher", "check_filter_count", "intent_filters", "validate_request",
]
assert sorted(__all__) == sorted([*_HOMES, *_INTENT])
