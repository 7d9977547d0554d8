"""Cache keys: what makes two searches return the same result.

The key hashes the normalised query, every parameter that changes the result, and the
versions of everything that produced it (each source's model/adapter/index version, the
intent decomposer, the fusion parameters). A new index or adapter therefore changes every
key — old entries are never served for the new model, and simply age out by TTL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tandem.catalog.item import normalize_text

#: Bump when the cached value's format changes, so old entries are ignored.
KEY_SCHEMA = "v1"
PREFIX = "tandem:search:"


def normalize_query(query: str) -> str:
    """The query as the retrievers see it: HTML entities unescaped, NFC, whitespace folded."""
    return normalize_text(query)


def cache_key(
    query: str,
    params: Mapping[str, Any],
    versions: Mapping[str, str],
    filters: Sequence[Mapping[str, Any]] = (),
) -> str:
    """``tandem:search:v1:<sha256>`` of the normalised query, params, filters and versions.

    ``params`` and ``versions`` are order-insensitive (sorted); ``filters`` keep their order
    (they are applied in order, though today all commute).
    """
    payload = json.dumps(
        {
            "q": normalize_query(query),
            "p": dict(sorted(params.items())),
            "f": list(filters),
            "v": dict(sorted(versions.items())),
        },
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str,
    )
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()
    return f"{PREFIX}{KEY_SCHEMA}:{digest}"
