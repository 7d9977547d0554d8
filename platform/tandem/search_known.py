"""Fused hits the live catalog still knows: deleted and quarantined items never reach a client.

A source may keep returning an item after it left the catalog: the generative model knows
every ID it was trained on until it is retrained, and a cached or lagging replica may too. The
searcher's catalog (:class:`~tandem.search.ItemLookup`: the served index's stored fields, in
the gateway the sparse service's ``Lookup``) is the truth about which items exist, so a fused
hit it does not know is dropped here, before ``top_k`` is cut, and counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import Counter

from tandem.fusion import FusedHit

UNKNOWN_HITS = Counter(
    "tandem_search_unknown_hits_total",
    "Fused hits dropped because the live catalog no longer knows their item (deleted, quarantined), by source.",
    ["source"],
)


def known_hits(fused: Sequence[FusedHit], catalog: Any, want: int | None,
               reasons: list[str]) -> tuple[list[FusedHit], dict[str, Any]]:
    """The hits of ``fused`` whose item ``catalog`` knows, in order, and their metadata.

    ``want``: stop once that many known hits are found (``None``: check them all, as filters
    need every candidate's fields). Looks items up in rounds of the hits still missing, so a
    search without retired items costs one lookup of ``want`` ids.

    When the catalog cannot answer, the hits not yet checked are kept unchecked (showing a
    possibly retired item beats answering nothing) and the reason is added to ``reasons``,
    which marks the result degraded.
    """
    kept: list[FusedHit] = []
    meta: dict[str, Any] = {}
    start = 0
    while start < len(fused) and (want is None or len(kept) < want):
        end = len(fused) if want is None else start + (want - len(kept))
        batch = fused[start:end]
        try:
            found: Mapping[str, Any] = catalog.lookup([h.item_id for h in batch])
        except Exception as exc:  # noqa: BLE001 - a catalog outage degrades, it does not fail the search
            reasons.append(f"catalog: {type(exc).__name__}: {exc}"[:300])
            return kept + list(fused[start:]), meta
        for h in batch:
            m = found.get(h.item_id)
            if m is None:
                for source in {e.source for e in h.provenance} or {"unknown"}:
                    UNKNOWN_HITS.labels(source).inc()
                continue
            meta[h.item_id] = m
            kept.append(h)
        start = end
    return kept, meta


__all__ = ["UNKNOWN_HITS", "known_hits"]
