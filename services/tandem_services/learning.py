"""Service side of learning from users (issue 22): the profile consumer and the gateway's
failed-search emitter.

:func:`run_profile_consumer` is the long-running consumer of ``tandem.feedback`` that keeps
user profiles (Redis with a TTL when ``redis_url`` is set) from the served model's item
vectors. :class:`FailedSearchEmitter` is what the gateway calls after each search: it decides
whether the search failed (:func:`tandem.failed.events.failure_reason`) and hands failures
to a background thread that publishes them to ``tandem.failed-queries``. The queue is
bounded and ``observe`` never blocks: when the broker is slow, failures are dropped and
counted, searches are never held up. :class:`RequestLogEmitter` does the same for every
answered search (the request log that joins feedback to queries).
:class:`ObservedSearchServicer` is how the gateway hands every answered search to such
observers (after the response is built; an observer's error is logged, never the caller's).
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


class _Background:
    """A bounded queue drained by one thread that publishes batches; :meth:`_offer` never blocks
    (a full queue drops the record and counts it), a publisher error is logged and counted."""

    what = "records"

    def __init__(self, publisher: Any, *, max_queue: int = 10_000, batch: int = 200) -> None:
        self.publisher, self.batch = publisher, batch
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.dropped = self.sent = self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.what.replace(" ", "-"), daemon=True)
        self._thread.start()

    def _offer(self, record: Any) -> bool:
        try:
            self._q.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            return False
        return True

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
            except Exception as exc:  # noqa: BLE001 - losing a report must not stop the emitter
                self.errors += len(records)
                log.warning("%s not published (%d dropped): %s", self.what, len(records), exc)

    def close(self, timeout_s: float = 5.0) -> None:
        """Publish what is queued (up to ``timeout_s``) and stop."""
        self._stop.set()
        self._thread.join(timeout_s)


class FailedSearchEmitter(_Background):
    """Publishes the gateway's failed searches in the background (module docstring)."""

    what = "failed searches"

    def __init__(self, publisher: Any, *, min_score: float | None = None, max_queue: int = 10_000,
                 batch: int = 200) -> None:
        self.min_score = min_score
        super().__init__(publisher, max_queue=max_queue, batch=batch)

    def observe(self, request_id: str, user_id: str, query: str, hits: int, best_score: float | None) -> bool:
        """Queue the search if it failed; ``True`` when it was queued. Never blocks."""
        reason = failure_reason(hits, best_score, self.min_score)
        if reason is None:
            return False
        return self._offer(FailedQuery(request_id, user_id, query[:512], reason, hits, float(best_score or 0.0),
                                       time.time()))

    def observe_search(self, request_id: str, user_id: str, query: str, item_ids: Sequence[str],
                       best_score: float | None) -> bool:
        """:class:`SearchObserver` form of :meth:`observe`."""
        return self.observe(request_id, user_id, query, len(item_ids), best_score)


class RequestLogEmitter(_Background):
    """Publishes every answered search (request id, user, query, ranked ids) to the request log
    (:mod:`tandem.feedback.requests`), so feedback can be joined to its query."""

    what = "request log records"

    def observe_search(self, request_id: str, user_id: str, query: str, item_ids: Sequence[str],
                       best_score: float | None) -> bool:
        """Queue the record; ``False`` when the queue was full. Never blocks."""
        from tandem.feedback.requests import MAX_ITEMS, MAX_QUERY_CHARS, RequestRecord

        del best_score
        return self._offer(RequestRecord(request_id, user_id, query[:MAX_QUERY_CHARS], tuple(item_ids[:MAX_ITEMS]),
                                         time.time()))
