"""What a search asks for and the limits it must keep: :class:`SearchConfig`, :class:`FilterSpec`,
:class:`SearchRequest` and their validation.

Validation runs before anything costly (the gateway runs it on its event loop), and every
refusal is an :class:`~tandem.errors.InvalidInput` naming the offending field in backticks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from tandem.cache import normalize_query
from tandem.errors import InvalidInput

FILTER_FIELDS = ("brand", "category", "price")


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
    ``circuit open``, for ``breaker_reset_s`` and then probed (:mod:`tandem.search.breakers`); 0 = never."""
    breaker_reset_s: float = Field(default=1.0, gt=0)
    """How long an open circuit skips its source before one search probes it (short: a restarted
    retriever is back in the answers within this time; one probe a second costs nothing)."""

    @classmethod
    def at_depth(cls, candidates: int, generative: int | None = None) -> SearchConfig:
        """A config whose every source hands the fuser ``candidates`` hits per intent, the
        generative one ``generative`` (default: ``candidates`` too; a beam search's cost grows
        with its depth, BM25's barely): the depths a learned fusion model was fitted at
        (``tandem fusion train --candidates/--generative-depth``) must be those it is served
        and evaluated at."""
        for name, value in (("candidates", candidates), ("generative_depth", generative)):
            if value is not None and value < 1:
                raise InvalidInput(f"`{name}` must be >= 1, got {value}")
        return cls(candidates=candidates, source_depth={"generative": generative or candidates})


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


def category_path(parts: Iterable[str]) -> str:
    """A category path in the one form filters compare: parts stripped, case-folded, ``/``-joined."""
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
        _validate_filter(f"filters[{i}]", f, config)
    return query, top_k


def _validate_filter(name: str, f: FilterSpec, config: SearchConfig) -> None:
    """Check one filter; ``name`` is its place in the request (``filters[i]``)."""
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
    elif f.field == "category" and not category_path((f.prefix or "").split("/")):
        raise InvalidInput(f"`{name}.prefix` is empty")
    elif f.field == "brand" and not (f.equals or "").strip():
        raise InvalidInput(f"`{name}.equals` is empty")


__all__ = ["FILTER_FIELDS", "FilterSpec", "SearchConfig", "SearchRequest", "category_path", "check_filter_count",
           "validate_request"]
