"""Profile features of search candidates, read inside the search deadline.

For a user with a profile, every candidate gets three item scores (the channel learned fusion
already reads item scores through, :data:`tandem.fusion.base.ItemScores`, so the fusion
feature builder needs no new code path; :class:`~tandem.personal.rerank.PersonalFuser`
uses them on top of any fuser):

- ``profile_sim``: cosine of the item's vector with the profile direction;
- ``profile_prefix1`` / ``profile_prefix2``: the share of the profile's (decayed) weight on
  the item's top-level / second-level ID prefix.

A request without a user id, a user without a profile, or a store that does not answer
gets no profile scores at all: the fuser then ranks exactly as without personalisation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from tandem.personal.profile import ProfileConfig, UserProfile
from tandem.personal.store import ProfileStore
from tandem.personal.vectors import ItemVectors

PROFILE_SCORES = ("profile_sim", "profile_prefix1", "profile_prefix2")


def _prefix_shares(profile: UserProfile, codes: list[list[int]]) -> tuple[list[float], list[float]]:
    """Each candidate's share of the profile's weight on its level-1 and level-2 ID prefix.

    The profile's (at most ``max_prefixes``) keys ``"44"`` / ``"44/2"`` are parsed once per read
    into integer keys, so a candidate costs two integer-keyed lookups instead of building and
    hashing two strings (the larger part of a read's time before)."""
    inv = 1.0 / profile.weight if profile.weight > 0 else 0.0
    level1: dict[int, float] = {}
    level2: dict[tuple[int, int], float] = {}
    for key, w in profile.prefixes.items():
        parts = key.split("/")
        if len(parts) == 1:
            level1[int(parts[0])] = w * inv
        elif len(parts) == 2:
            level2[(int(parts[0]), int(parts[1]))] = w * inv
    p1 = [level1.get(c[0], 0.0) for c in codes]
    p2 = [level2.get((c[0], c[1]), 0.0) for c in codes] if codes and len(codes[0]) > 1 else [0.0] * len(codes)
    return p1, p2


def profile_scores(profile: UserProfile, ids: Sequence[str], vectors: ItemVectors
                   ) -> dict[str, dict[str, float]]:
    """:data:`PROFILE_SCORES` of each of ``ids`` the vectors know (others are left out).

    On the search path: one gather and one mat-vec for the similarities, two integer-keyed
    lookups per candidate for the shares (:func:`_prefix_shares`)."""
    u = profile.unit()
    if u is None:
        return {}
    row = vectors.row
    known = [i for i in ids if i in row]
    if not known:
        return {}
    rows = np.fromiter((row[i] for i in known), dtype=np.int64, count=len(known))
    sims = (vectors.vectors[rows] @ u).tolist()
    p1, p2 = _prefix_shares(profile, vectors.codes[rows, :2].tolist())
    return {item: {"profile_sim": sim, "profile_prefix1": a, "profile_prefix2": b}
            for item, sim, a, b in zip(known, sims, p1, p2, strict=True)}


class ProfileReader:
    """What the searcher holds: the store, the item vectors and the decay settings.

    :meth:`scores` never raises and never waits past the store's own (short) timeout; a
    request past its ``deadline`` (a :func:`time.monotonic` instant) skips the read.
    """

    def __init__(self, store: ProfileStore, vectors: ItemVectors, config: ProfileConfig | None = None,
                 clock: object = time.time) -> None:
        self.store, self.vectors = store, vectors
        self.config = config or ProfileConfig()
        self._clock = clock
        self.reads = self.misses = self.skipped = 0

    def profile(self, user_id: str, deadline: float | None = None) -> UserProfile | None:
        """The user's profile decayed to now, or ``None`` (anonymous, unknown, store down, late)."""
        if not user_id:
            return None
        if deadline is not None and time.monotonic() >= deadline:
            self.skipped += 1
            return None
        self.reads += 1
        try:
            profile = self.store.get(user_id)
        except Exception:  # noqa: BLE001 - fail-open: a broken store means no personalisation
            profile = None
        if profile is None or profile.weight <= 0:
            self.misses += 1
            return None
        profile.decay_to(self._clock(), self.config.half_life_s)  # type: ignore[operator]
        return profile

    def scores(self, user_id: str, ids: Sequence[str], deadline: float | None = None
               ) -> dict[str, dict[str, float]]:
        """Profile item scores of ``ids`` for ``user_id`` (empty when there is no profile)."""
        profile = self.profile(user_id, deadline)
        return {} if profile is None else profile_scores(profile, ids, self.vectors)


def merge_scores(base: Mapping[str, Mapping[str, float]] | None, extra: Mapping[str, Mapping[str, float]]
                 ) -> dict[str, dict[str, float]] | None:
    """``base`` item scores with ``extra``'s names added per item (``base`` unchanged when ``extra`` is empty)."""
    if not extra:
        return None if base is None else {i: dict(v) for i, v in base.items()}
    out = {i: dict(v) for i, v in (base or {}).items()}
    for item, vals in extra.items():
        out.setdefault(item, {}).update(vals)
    return out
