"""Fusion of ranked lists from several sources and sub-intents: RRF, normalised score fusion
(min-max, z-score) and learned fusion (LambdaMART), behind one :class:`Fuser` interface.

:class:`LearnedFusion` imports LightGBM, so it is loaded from :mod:`tandem.fusion.learned`
on demand rather than here.
"""

from tandem.fusion.base import Evidence, FusedHit, Fuser, ItemScores, RankedList
from tandem.fusion.normalized import ScoreFusion, normalize_scores
from tandem.fusion.rrf import RRF

__all__ = ["RRF", "Evidence", "FusedHit", "Fuser", "ItemScores", "RankedList", "ScoreFusion", "normalize_scores"]
