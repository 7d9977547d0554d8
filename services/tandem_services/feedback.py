"""``tandem.v1.FeedbackService``: impressions, clicks and purchases onto the feedback topic.

Validation is the core's (:func:`tandem.feedback.validate_feedback`): a bad event is
``INVALID_ARGUMENT`` naming ``events[i].<field>`` and nothing of the call is recorded. An
event's ``arm`` is taken from what this gateway served (:class:`~tandem_services.arms.ServedLog`)
when it served the request, else from the client. The call returns once the sink made the
events durable (Kafka: acknowledged by the idempotent producer); a sink outage is
``UNAVAILABLE`` and the client retries, which stores nothing twice (ids are digests).

Accepted events are counted (:class:`FeedbackCounts`): ``tandem_feedback_events_total`` by
arm and kind, once per event id, and per *split* request this gateway served, whether its
feedback arrived and whether it has a click: the arm's CTR, in Prometheus
(``tandem_arm_{feedback,clicked}_requests_total``) and in the canary's per-arm windows, which
the controller tests. A retried call counts nothing twice (bounded memory of recent ids).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Executor

import grpc

from tandem.canary.arms import CANDIDATE, CURRENT, Arms
from tandem.errors import InvalidInput, Unavailable
from tandem.feedback.events import FeedbackEvent, validate_feedback
from tandem.feedback.stream import FeedbackSink
from tandem.v1 import feedback_pb2, feedback_pb2_grpc
from tandem_services.arms import ServedLog
from tandem_services.metrics import ARM_CLICKED_REQUESTS, ARM_FEEDBACK_REQUESTS, FEEDBACK_EVENTS

MAX_EVENTS = 500
"""Most events one ``Record`` call may carry."""


class FeedbackCounts:
    """Counts accepted feedback once (see the module docstring); remembers the last ``size``
    event ids and request ids, so memory is bounded and a retry within that horizon is free."""

    def __init__(self, served: ServedLog | None, arms: Arms | None, size: int = 200_000) -> None:
        self.served, self.arms, self.size = served, arms, size
        self._events: OrderedDict[str, None] = OrderedDict()
        self._requests: OrderedDict[str, bool] = OrderedDict()  # request_id -> clicked
        self._mu = threading.Lock()

    def _remember(self, table: OrderedDict, key: str, value: object) -> None:
        table[key] = value
        table.move_to_end(key)
        if len(table) > self.size:
            table.popitem(last=False)

    def add(self, events: Sequence[FeedbackEvent]) -> None:
        """Count ``events`` (already durable) that were not counted before."""
        for e in events:
            with self._mu:
                if e.event_id in self._events:
                    continue
                self._remember(self._events, e.event_id, None)
            FEEDBACK_EVENTS.labels(e.arm or "unknown", e.kind).inc()
            route = self.served.route(e.request_id) if self.served is not None else None
            if route not in (CURRENT, CANDIDATE):
                continue  # interleaved (the store judges those) or not served by this gateway
            with self._mu:
                seen = e.request_id in self._requests
                clicked_before = self._requests.get(e.request_id, False)
                click = e.kind in ("click", "purchase")
                self._remember(self._requests, e.request_id, clicked_before or click)
            new_request, new_click = not seen, click and not clicked_before
            if new_request:
                ARM_FEEDBACK_REQUESTS.labels(route).inc()
            if new_click:
                ARM_CLICKED_REQUESTS.labels(route).inc()
            if self.arms is not None and (new_request or new_click):
                self.arms.record_feedback(route, new_request=new_request, new_click=new_click)


class FeedbackServicer(feedback_pb2_grpc.FeedbackServiceServicer):
    """Validates, labels and sinks feedback events."""

    def __init__(self, sink: FeedbackSink | None, served: ServedLog | None = None,
                 executor: Executor | None = None, arms: Arms | None = None) -> None:
        self.sink, self.served, self.executor = sink, served, executor
        self.counts = FeedbackCounts(served, arms)

    def _event(self, i: int, e: feedback_pb2.FeedbackEvent, now: float) -> FeedbackEvent:
        fields = {"request_id": e.request_id, "user_id": e.user_id, "item_id": e.item_id, "kind": e.kind,
                  "position": e.position, "ts": e.ts, "arm": e.arm}
        event = validate_feedback(fields, where=f"events[{i}].", now=now)
        served = self.served.arm(event.request_id, event.item_id) if self.served is not None else None
        if served and served != event.arm:
            event = FeedbackEvent(event.request_id, event.user_id, event.item_id, event.kind, event.position,
                                  event.ts, served)
        return event

    async def Record(self, request: feedback_pb2.RecordRequest, context: grpc.aio.ServicerContext):
        if not request.events:
            raise InvalidInput("`events` is empty")
        if len(request.events) > MAX_EVENTS:
            raise InvalidInput(f"`events` has {len(request.events)} entries; the limit is {MAX_EVENTS}")
        now = time.time()
        events = [self._event(i, e, now) for i, e in enumerate(request.events)]
        if self.sink is None:
            raise Unavailable("this gateway has no feedback sink (set TANDEM_KAFKA_BOOTSTRAP or a feedback file)")
        await asyncio.get_running_loop().run_in_executor(self.executor, self.sink.send, events)
        self.counts.add(events)
        return feedback_pb2.RecordResponse(accepted=len(events), event_ids=[e.event_id for e in events])
