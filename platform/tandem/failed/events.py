"""Failed-search records and their Kafka codec (topic ``tandem.failed-queries``).

One record per failed search: ``{request_id, user_id, query, reason, hits, best_score, ts}``
with ``reason`` one of :data:`REASONS`: ``zero_hits`` (nothing came back), ``low_score`` (the
best hit's score under the configured floor) or ``no_click`` (hits were shown and the user
clicked none; reported from feedback, after the fact). Key = the query text, so a query's
failures share a partition. Decoding validates and raises :class:`FailedQueryError` (an
:class:`~tandem.catalog.events.EventError`), so the ingest consumer's dead-letter path applies.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tandem.catalog.events import EventError

FAILED_TOPIC = "tandem.failed-queries"
REASONS = ("zero_hits", "low_score", "no_click")
MAX_QUERY_CHARS = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class FailedQueryError(EventError):
    """A malformed failed-query record; the message names the field."""

    def __init__(self, message: str) -> None:  # noqa: D107
        super().__init__("invalid_field", message)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class FailedQuery:
    """One failed search (module docstring)."""

    request_id: str
    user_id: str
    query: str
    reason: str
    hits: int
    best_score: float
    ts: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON body."""
        return asdict(self)


def failure_reason(hits: int, best_score: float | None, min_score: float | None) -> str | None:
    """Why a search with ``hits`` hits and best score ``best_score`` failed, ``None`` if it did not.

    ``min_score``: the floor under which the best hit counts as a failure (``None``: not checked;
    fusion scores are not comparable across fusers, so the floor is the operator's).
    """
    if hits == 0:
        return "zero_hits"
    if min_score is not None and best_score is not None and best_score < min_score:
        return "low_score"
    return None


def _text(d: Mapping[str, Any], name: str, limit: int, required: bool) -> str:
    v = d.get(name, "")
    if not isinstance(v, str):
        raise FailedQueryError(f"`{name}` must be a string, got {type(v).__name__}")
    v = v.strip()
    if required and not v:
        raise FailedQueryError(f"`{name}` is required")
    if len(v) > limit or _CONTROL.search(v):
        raise FailedQueryError(f"`{name}` must be at most {limit} characters without control characters")
    return v


def validate_failed(d: Mapping[str, Any]) -> FailedQuery:
    """A :class:`FailedQuery` from raw fields; :class:`FailedQueryError` naming the bad field."""
    unknown = set(d) - {"request_id", "user_id", "query", "reason", "hits", "best_score", "ts"}
    if unknown:
        raise FailedQueryError(f"unknown fields {sorted(unknown)}")
    reason = _text(d, "reason", 16, True)
    if reason not in REASONS:
        raise FailedQueryError(f"`reason` must be one of {', '.join(REASONS)}, got {reason!r}")
    hits, best, ts = d.get("hits", 0), d.get("best_score", 0.0), d.get("ts") or time.time()
    if isinstance(hits, bool) or not isinstance(hits, int) or not 0 <= hits <= 1000:
        raise FailedQueryError(f"`hits` must be an integer in 0..1000, got {hits!r}")
    for name, v in (("best_score", best), ("ts", ts)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise FailedQueryError(f"`{name}` must be a finite number, got {v!r}")
    return FailedQuery(_text(d, "request_id", 256, False), _text(d, "user_id", 256, False),
                       _text(d, "query", MAX_QUERY_CHARS, True), reason, int(hits), float(best), float(ts))


def encode_failed(f: FailedQuery) -> tuple[bytes, bytes]:
    """Kafka key (the query) and JSON value."""
    return f.query.encode("utf-8"), json.dumps(f.to_dict(), separators=(",", ":")).encode("utf-8")


def decode_failed(key: bytes | str | None, value: bytes | str | None) -> FailedQuery:
    """Decode and validate one record (JSONL lines too: ``key`` may be ``None``)."""
    del key
    if value is None:
        raise FailedQueryError("the record has no value")
    try:
        body = json.loads(value)
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise FailedQueryError(f"the value is not JSON: {e}"[:300]) from None
    if not isinstance(body, dict):
        raise FailedQueryError(f"the value must be a JSON object, got {type(body).__name__}")
    return validate_failed(body)
