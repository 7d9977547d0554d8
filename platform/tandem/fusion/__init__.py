"""Fusion of ranked lists from several sources: RRF now, learned fusion later (same interface)."""

from tandem.fusion.base import Evidence, FusedHit, Fuser, RankedList
from tandem.fusion.rrf import RRF

__all__ = ["RRF", "Evidence", "FusedHit", "Fuser", "RankedList"]
