"""Service side of learning from users (issue 22): the profile consumer and the gateway's
failed-search emitter.

:func:`run_profile_consumer` is the long-running consumer of ``tandem.feedback`` that keeps
user profiles (Redis with a TTL when ``redis_url`` is set) from the served model's item
vectors. :class:`FailedSearchEmitter` is what the gateway calls after each search: it decides
whether the search failed (:func:`tandem.failed.events.failure_reason`) and hands failures
to a background thread that publishes them to ``tandem.failed-queries``. The queue is
bounded and ``observe`` never blocks: when the broker is slow, failures are dropped and
counted, searches are never held up. :class:`ObservedSearchServicer` is how the gateway hands
every answered search to such observers (after the response is built; an observer's error is
logged, never the caller's).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tandem.failed.events import FailedQuery, failure_reason
from tandem.streams.config import StreamSettings

log = logging.getLogger(__name__)


class SearchObserver(Protocol):
    """Sees every search the gateway answered; must return at once (queue, never publish inline)."""

    def observe_search(self, request_id: str, user_id: str, query: str, item_ids: Sequence[str],
                       best_score: float | None) -> object:
        """Note one answered search."""
        ...

    def close(self) -> None:
        """Flush and stop (server shutdown)."""
        ...


class ObservedSearchServicer:
    """``SearchService`` that answers through ``inner`` and then tells each observer."""

    def __init__(self, inner: Any, observers: Sequence[SearchObserver]) -> None:
        self.inner, self.observers = inner, list(observers)
        self.arms = inner.arms  # the FeedbackService and CanaryService read the inner servicer's arms

    async def Search(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method name
        """The inner answer, observed."""
        response = await self.inner.Search(request, context)
        ids = [h.item_id for h in response.hits]
        best = response.hits[0].score if response.hits else None
        for o in self.observers:
            try:
                o.observe_search(response.request_id, request.user_id, request.query, ids, best)
            except Exception as exc:  # noqa: BLE001 - observing must never fail a search
                log.warning("search observer %s failed: %s", type(o).__name__, exc)
        return response


def run_profile_consumer(model: Path, redis_url: str | None, settings: StreamSettings | None = None,
                         **overrides: Any) -> Any:
    """Consume ``tandem.feedback`` into profiles until stopped; returns the consumer's totals."""
    from tandem.personal import ItemVectors, open_profile_store
    from tandem.personal.consumer import profile_consumer

    consumer = profile_consumer(open_profile_store(redis_url), ItemVectors.from_tree_model(model), settings,
                                **overrides)
    return consumer.run()


class FailedSearchEmitter:
    """Publishes the gateway's failed searches in the background (module docstring)."""

    def __init__(self, publisher: Any, *, min_score: float | None = None, max_queue: int = 10_000,
                 batch: int = 200) -> None:
        self.publisher, self.min_score, self.batch = publisher, min_score, batch
        self._q: queue.Queue[FailedQuery] = queue.Queue(maxsize=max_queue)
        self.dropped = self.sent = self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="failed-searches", daemon=True)
        self._thread.start()

    def observe(self, request_id: str, user_id: str, query: str, hits: int, best_score: float | None) -> bool:
        """Queue the search if it failed; ``True`` when it was queued. Never blocks."""
        reason = failure_reason(hits, best_score, self.min_score)
        if reason is None:
            return False
        try:
            self._q.put_nowait(FailedQuery(request_id, user_id, query[:512], reason, hits,
                                           float(best_score or 0.0), time.time()))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def observe_search(self, request_id: str, user_id: str, query: str, item_ids: Sequence[str],
                       best_score: float | None) -> bool:
        """:class:`SearchObserver` form of :meth:`observe`."""
        return self.observe(request_id, user_id, query, len(item_ids), best_score)

    def _run(self) -> None:
        while not self._stop.is_set() or not self._q.empty():
            try:
                first = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            records = [first]
            while len(records) < self.batch:
                try:
                    records.append(self._q.get_nowait())
                except queue.Empty:
                    break
            try:
                self.publisher.send(records)
                self.sent += len(records)
            except Exception as exc:  # noqa: BLE001 - losing a failure report must not stop the emitter
                self.errors += len(records)
                log.warning("failed searches not published (%d dropped): %s", len(records), exc)

    def close(self, timeout_s: float = 5.0) -> None:
        """Publish what is queued (up to ``timeout_s``) and stop."""
        self._stop.set()
        self._thread.join(timeout_s)
