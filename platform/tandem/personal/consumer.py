"""Keeping profiles current from ``tandem.feedback``.

:class:`ProfileApplier` is an applier for the ingest consumer
(:class:`~tandem.streams.consumer.IngestConsumer` with the feedback decoder), so the profile
consumer inherits its delivery guarantees: offsets are committed after the batch is applied,
refused records go to the dead-letter topic. A redelivered batch changes nothing (each
profile remembers its recent event ids). Clicks and purchases of a known user on an item the
vectors know update the profile; impressions, anonymous events and unknown items are counted
as skipped (``stale`` in the consumer's report).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from tandem.feedback.events import FeedbackEvent, decode_feedback
from tandem.personal.profile import ProfileConfig, UserProfile
from tandem.personal.store import ProfileStore
from tandem.personal.vectors import ItemVectors
from tandem.streams.apply import BatchReport
from tandem.streams.config import StreamSettings

PROFILE_GROUP = "tandem-profiles"
"""Consumer group of the profile consumer (its own offsets, beside the feedback replay's)."""


class _Progress:
    """What the ingest consumer reports as its store's sequence number: events folded in so far."""

    seq = 0


class ProfileApplier:
    """Folds a batch of feedback events into the users' profiles (one read and one write per user)."""

    def __init__(self, profiles: ProfileStore, vectors: ItemVectors, config: ProfileConfig | None = None) -> None:
        self.profiles, self.vectors = profiles, vectors
        self.config = config or ProfileConfig()
        self.store = _Progress()

    def apply(self, events: Sequence[FeedbackEvent]) -> BatchReport:
        """Update the profiles ``events`` touch; a :class:`BatchReport` in the consumer's terms."""
        started = time.perf_counter()
        touched: dict[str, UserProfile] = {}
        applied = duplicates = skipped = 0
        for e in sorted(events, key=lambda e: e.ts):
            weight = self.config.kind_weight(e.kind)
            vec = self.vectors.vector(e.item_id)
            if not e.user_id or weight <= 0 or vec is None:
                skipped += 1
                continue
            profile = touched.get(e.user_id)
            if profile is None:
                profile = self.profiles.get_strict(e.user_id) or UserProfile.empty(self.vectors.dim)
                touched[e.user_id] = profile
            if profile.add(e.event_id, vec, self.vectors.code(e.item_id), weight, e.ts, self.config):
                applied += 1
            else:
                duplicates += 1
        for user, profile in touched.items():
            self.profiles.put(user, profile)
        self.store.seq += applied
        return BatchReport(events=len(events), applied=applied, duplicates=duplicates, stale=skipped, indexed=0,
                           seconds=time.perf_counter() - started)


def profile_consumer(store: ProfileStore, vectors: ItemVectors, settings: StreamSettings | None = None, *,
                     config: ProfileConfig | None = None, group: str = PROFILE_GROUP, max_batch: int = 500,
                     **overrides: Any) -> Any:
    """An :class:`~tandem.streams.consumer.IngestConsumer` folding ``tandem.feedback`` into
    profiles (call ``run()`` on it)."""
    from tandem.streams.consumer import IngestConsumer

    settings = settings or StreamSettings()
    return IngestConsumer(ProfileApplier(store, vectors, config), settings,  # type: ignore[arg-type]
                          group=group, topic=settings.feedback_topic, dlq_topic=settings.feedback_dlq_topic,
                          max_batch=max_batch, decode=decode_feedback, **overrides)
