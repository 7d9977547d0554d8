"""Behaviour-aware ranking (issue 22, item 1): per-user profiles built from feedback events
and the fusion features read from them at query time.

A :class:`~tandem.personal.profile.UserProfile` is a time-decayed sum of the vectors of the
items a user clicked or bought (the generative model's item embeddings, which start at the
pretrained encoder's title embeddings) plus decayed weights of their top semantic-ID
prefixes. The feedback consumer (:mod:`tandem.personal.consumer`) keeps profiles in a
:mod:`store <tandem.personal.store>` (Redis with a TTL, or a bounded in-process store); the
searcher reads one per request through :class:`~tandem.personal.features.ProfileReader`
(fail-open, bounded by a short socket timeout) and hands the fuser per-candidate
:data:`~tandem.personal.features.PROFILE_SCORES` as item scores; :class:`PersonalFuser`
re-ranks with them, and leaves a request without a profile exactly as its inner fuser ranks it.
"""

from tandem.personal.features import PROFILE_SCORES, ProfileReader, profile_scores
from tandem.personal.profile import ProfileConfig, UserProfile
from tandem.personal.rerank import PersonalFuser
from tandem.personal.store import MemoryProfileStore, ProfileStore, RedisProfileStore, open_profile_store
from tandem.personal.vectors import ItemVectors

__all__ = [
    "PROFILE_SCORES", "ItemVectors", "MemoryProfileStore", "PersonalFuser", "ProfileConfig", "ProfileReader",
    "ProfileStore", "RedisProfileStore", "UserProfile", "open_profile_store", "profile_scores",
]
