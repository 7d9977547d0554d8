"""``tandem.v1.FeedbackService``: impressions, clicks and purchases onto the feedback topic.

Validation is the core's (:func:`tandem.feedback.validate_feedback`): a bad event is
``INVALID_ARGUMENT`` naming ``events[i].<field>`` and nothing of the call is recorded. An
event's ``arm`` is taken from what this gateway served (:class:`~tandem_services.arms.ServedLog`)
when it served the request, else from the client. The call returns once the sink made the
events durable (Kafka: acknowledged by the idempotent producer); a sink outage is
``UNAVAILABLE`` and the client retries, which stores nothing twice (ids are digests).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

import grpc

from tandem.errors import InvalidInput, Unavailable
from tandem.feedback.events import FeedbackEvent, validate_feedback
from tandem.feedback.stream import FeedbackSink
from tandem.v1 import feedback_pb2, feedback_pb2_grpc
from tandem_services.arms import ServedLog

MAX_EVENTS = 500
"""Most events one ``Record`` call may carry."""


class FeedbackServicer(feedback_pb2_grpc.FeedbackServiceServicer):
    """Validates, labels and sinks feedback events."""

    def __init__(self, sink: FeedbackSink | None, served: ServedLog | None = None,
                 executor: Executor | None = None) -> None:
        self.sink, self.served, self.executor = sink, served, executor

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
        return feedback_pb2.RecordResponse(accepted=len(events), event_ids=[e.event_id for e in events])
