"""Feedback events: what users did with a search response, and their Kafka codec.

One event is ``{request_id, user_id, item_id, kind, position, ts, arm}``: an *impression*
(the hit at ``position`` was shown), a *click* or a *purchase*. ``request_id`` and ``arm``
come from the :class:`SearchResponse` that showed the item (``arm`` is the hit's arm:
``current`` or ``candidate``), so every event can be credited to the version that served it.

On the ``tandem.feedback`` topic a record has key = ``request_id`` (a request's events stay in
one partition, in order) and a JSON value with the fields above plus ``event_id``: a digest
of the fields, so the same event sent twice (a client retry, a replayed batch) has the same
id and the store keeps it once. Decoding validates like the gRPC service does and fails with
:class:`FeedbackError`, an :class:`~tandem.catalog.events.EventError`, so the ingest
consumer's dead-letter path handles refused feedback as it handles refused item events.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from tandem.catalog.events import EventError
from tandem.catalog.item import MAX_ITEM_ID_LEN

KINDS = ("impression", "click", "purchase")
"""What a user did; a purchase implies a click on the same hit (both are reported)."""
ARMS = ("current", "candidate")
"""The versions a gateway serves side by side (:mod:`tandem.canary`)."""
MAX_ID_CHARS = 256
"""Longest ``request_id`` / ``user_id``."""
MAX_POSITION = 1000
"""Largest 1-based position (a response holds at most 1,000 hits)."""
MAX_FUTURE_S = 300.0
"""How far ahead of this machine's clock a ``ts`` may be (client clock skew)."""
MIN_TS = 946_684_800.0
"""2000-01-01T00:00:00Z: an older ``ts`` is a unit mistake (milliseconds sent as seconds is the other way)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class FeedbackReason(StrEnum):
    """Why a feedback record was refused: the ``tandem-dlq-reason`` of its dead letter."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_FIELD = "invalid_field"
    UNKNOWN_FIELD = "unknown_field"


class FeedbackError(EventError):
    """A malformed feedback event; the message names the field in backticks."""

    def __init__(self, reason: FeedbackReason, message: str) -> None:  # noqa: D107
        super().__init__(reason, message)  # type: ignore[arg-type]  # a StrEnum code like EventReason


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """A validated feedback event (build it with :func:`validate_feedback`)."""

    request_id: str
    """``request_id`` of the response that showed the item."""
    user_id: str
    """The user, as given in the search request ("" when anonymous)."""
    item_id: str
    """The item acted on."""
    kind: str
    """One of :data:`KINDS`."""
    position: int
    """1-based position of the hit in the response."""
    ts: float
    """When it happened, seconds since the Unix epoch."""
    arm: str = ""
    """The hit's arm (``current``/``candidate``), "" when unknown."""

    @property
    def event_id(self) -> str:
        """Digest of every field but ``arm``: equal events share it, so duplicates are dropped."""
        canon = json.dumps([self.request_id, self.user_id, self.item_id, self.kind, self.position,
                            round(self.ts, 6)], separators=(",", ":"))
        return hashlib.blake2b(canon.encode("utf-8"), digest_size=16).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The JSON body (with ``event_id``)."""
        return {**asdict(self), "event_id": self.event_id}


def _text(fields: Mapping[str, Any], name: str, where: str, *, required: bool, limit: int) -> str:
    value = fields.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise FeedbackError(FeedbackReason.INVALID_FIELD, f"`{where}{name}` must be a string, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise FeedbackError(FeedbackReason.INVALID_FIELD, f"`{where}{name}` is required")
    if len(value) > limit:
        raise FeedbackError(FeedbackReason.INVALID_FIELD, f"`{where}{name}` is {len(value)} characters; the limit is {limit}")
    if _CONTROL.search(value):
        raise FeedbackError(FeedbackReason.INVALID_FIELD, f"`{where}{name}` must not contain control characters")
    return value


def validate_feedback(fields: Mapping[str, Any], *, where: str = "", now: float | None = None,
                      future_s: float | None = MAX_FUTURE_S) -> FeedbackEvent:
    """A :class:`FeedbackEvent` from raw ``fields``; raises :class:`FeedbackError` naming the
    field (prefixed with ``where``, e.g. ``events[3].``). ``ts`` 0 or absent = ``now``; a ``ts``
    more than ``future_s`` ahead of ``now`` is refused (``None``: not checked)."""
    unknown = set(fields) - {"request_id", "user_id", "item_id", "kind", "position", "ts", "arm", "event_id"}
    if unknown:
        raise FeedbackError(FeedbackReason.UNKNOWN_FIELD, f"unknown fields {sorted(unknown)}")
    now = time.time() if now is None else now
    request_id = _text(fields, "request_id", where, required=True, limit=MAX_ID_CHARS)
    user_id = _text(fields, "user_id", where, required=False, limit=MAX_ID_CHARS)
    item_id = _text(fields, "item_id", where, required=True, limit=MAX_ITEM_ID_LEN)
    kind = _text(fields, "kind", where, required=True, limit=16)
    if kind not in KINDS:
        raise FeedbackError(FeedbackReason.INVALID_FIELD, f"`{where}kind` must be one of {', '.join(KINDS)}, got {kind!r}")
    arm = _text(fields, "arm", where, required=False, limit=16)
    if arm and arm not in ARMS:
        raise FeedbackError(FeedbackReason.INVALID_FIELD, f"`{where}arm` must be empty or one of {', '.join(ARMS)}, got {arm!r}")
    position = fields.get("position")
    if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= MAX_POSITION:
        raise FeedbackError(FeedbackReason.INVALID_FIELD, f"`{where}position` must be an integer in 1..{MAX_POSITION}, got {position!r}")
    ts = fields.get("ts") or 0.0
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise FeedbackError(FeedbackReason.INVALID_FIELD, f"`{where}ts` must be a finite number of seconds, got {ts!r}")
    ts = float(ts) or now
    if ts < MIN_TS:
        raise FeedbackError(FeedbackReason.INVALID_FIELD, f"`{where}ts` {ts:g} is before 2000-01-01; it must be seconds since the epoch")
    if future_s is not None and ts > now + future_s:
        raise FeedbackError(FeedbackReason.INVALID_FIELD, f"`{where}ts` is {ts - now:.0f} s in the future")
    return FeedbackEvent(request_id, user_id, item_id, kind, position, ts, arm)


def encode_feedback(event: FeedbackEvent) -> tuple[bytes, bytes]:
    """Kafka key (``request_id``) and JSON value of ``event``."""
    return event.request_id.encode("utf-8"), json.dumps(event.to_dict(), separators=(",", ":")).encode("utf-8")


def decode_feedback(key: bytes | str | None, value: bytes | str | None) -> FeedbackEvent:
    """Decode and validate one ``tandem.feedback`` record; raises :class:`FeedbackError`.

    ``ts`` is checked against the past only: a replay reads events long after they happened.
    """
    del key  # the value carries request_id; the key only partitions
    if value is None:
        raise FeedbackError(FeedbackReason.MALFORMED_JSON, "the record has no value")
    try:
        body = json.loads(value)
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise FeedbackError(FeedbackReason.MALFORMED_JSON, f"the value is not JSON: {e}"[:300]) from None
    if not isinstance(body, dict):
        raise FeedbackError(FeedbackReason.NOT_AN_OBJECT, f"the value must be a JSON object, got {type(body).__name__}")
    return validate_feedback(body, future_s=None)
