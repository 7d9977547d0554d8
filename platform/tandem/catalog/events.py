"""The item-event codec: what travels on the ``tandem.items`` topic and in event files.

One event is a Kafka record with key = ``item_id`` (UTF-8) and a JSON value
``{"op": "upsert"|"delete", "item": {...}, "version": N}``. Decoding validates everything a
consumer relies on and fails with :class:`EventError`, whose ``reason`` is a short stable
code (it becomes the ``tandem-dlq-reason`` header of the dead-letter record) and whose
message names the offending field in backticks.

Versions: the event's ``version`` is the item's version. An upsert may carry it either at
the top level or inside ``item`` (or both, when they agree); a delete must carry it at the
top level, since it is what makes the tombstone win over older upserts.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tandem.catalog.item import MAX_ITEM_ID_LEN, MAX_VERSION, Item, check_item_id
from tandem.errors import InvalidInput

FORMAT_OPS = ("upsert", "delete")


class EventReason(StrEnum):
    """Why an event was refused; stable codes used in DLQ headers and metrics labels."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_OP = "unknown_op"
    MISSING_ITEM = "missing_item"
    MISSING_KEY = "missing_key"
    KEY_MISMATCH = "key_mismatch"
    INVALID_ITEM = "invalid_item"
    BAD_VERSION = "bad_version"
    VERSION_MISMATCH = "version_mismatch"
    UNKNOWN_FIELD = "unknown_field"


class EventError(InvalidInput):
    """A malformed item event. ``reason`` is an :class:`EventReason`; the message says more."""

    def __init__(self, reason: EventReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ItemEvent(BaseModel):
    """A validated item event: an upsert carries the full :class:`Item`, a delete only its id.

    ``item.version`` always equals ``version`` for upserts, so stores can key on either.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Literal["upsert", "delete"]
    """``upsert`` adds or replaces the item; ``delete`` removes it (a tombstone at ``version``)."""
    item_id: str = Field(min_length=1, max_length=MAX_ITEM_ID_LEN)
    """The item's id; equals the record key."""
    version: int = Field(ge=0, le=MAX_VERSION)
    """The item's version (``0..2**63-1``); an event older than (or equal to) the stored version changes nothing."""
    item: Item | None = None
    """The full item for upserts; ``None`` for deletes."""

    @model_validator(mode="after")
    def _consistent(self) -> ItemEvent:
        if self.op == "upsert":
            if self.item is None:
                raise ValueError("`item` is required for an upsert")
            if self.item.item_id != self.item_id or self.item.version != self.version:
                raise ValueError("`item` must carry the event's `item_id` and `version`")
        elif self.item is not None:
            raise ValueError("a delete carries no `item` body")
        return self

    @classmethod
    def upsert(cls, item: Item, version: int | None = None) -> ItemEvent:
        """An upsert of ``item``; ``version`` (default: the item's own) is stamped on the item."""
        v = item.version if version is None else version
        if v != item.version:
            item = item.model_copy(update={"version": v})
        return cls(op="upsert", item_id=item.item_id, version=v, item=item)

    @classmethod
    def delete(cls, item_id: str, version: int) -> ItemEvent:
        """A delete (tombstone) of ``item_id`` at ``version``."""
        return cls(op="delete", item_id=item_id, version=version)


def encode_event(event: ItemEvent) -> tuple[bytes, bytes]:
    """``(key, value)`` bytes of the Kafka record for ``event``; :func:`decode_event` inverts it."""
    body: dict[str, Any] = {"op": event.op, "version": event.version}
    if event.item is not None:
        body["item"] = event.item.model_dump(exclude_none=True)
    else:
        body["item"] = {"item_id": event.item_id}
    return event.item_id.encode("utf-8"), json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _text(raw: bytes | str | None, what: str) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EventError(EventReason.MALFORMED_JSON, f"`{what}` is not valid UTF-8") from None


def _version(value: Any, field: str) -> int:
    # bool is an int in Python; a JSON true is not a version.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VERSION:
        raise EventError(EventReason.BAD_VERSION, f"`{field}` must be an integer in 0..{MAX_VERSION}, got {value!r:.40}")
    return value


def _delete_id(value: Any) -> str:
    """The ``item_id`` of a delete, held to the same rules as an item's (:class:`Item`)."""
    try:
        item_id = check_item_id(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    except ValueError:
        raise EventError(EventReason.INVALID_ITEM, "`item.item_id` must not contain control characters") from None
    if not item_id:
        raise EventError(EventReason.INVALID_ITEM, "`item.item_id` must be a non-empty string")
    if len(item_id) > MAX_ITEM_ID_LEN:
        raise EventError(EventReason.INVALID_ITEM, f"`item.item_id` is {len(item_id)} characters; the limit is "
                                                   f"{MAX_ITEM_ID_LEN}")
    try:
        item_id.encode("utf-8")
    except UnicodeEncodeError:
        raise EventError(EventReason.INVALID_ITEM, "`item.item_id` holds a lone surrogate") from None
    return item_id


def event_from_dict(body: Any, key: str | None) -> ItemEvent:
    """Validate a decoded JSON value (and the record key, when there is one) into an event.

    ``key=None`` means "no key to check" (file sources); Kafka callers pass the record key and
    a missing key is refused there (see :func:`decode_event`).
    """
    if not isinstance(body, dict):
        raise EventError(EventReason.NOT_AN_OBJECT, f"the event must be a JSON object, got {type(body).__name__}")
    unknown = set(body) - {"op", "item", "version"}
    if unknown:
        raise EventError(EventReason.UNKNOWN_FIELD, f"unknown event fields: `{'`, `'.join(sorted(unknown))}`")
    op = body.get("op")
    if op not in FORMAT_OPS:
        raise EventError(EventReason.UNKNOWN_OP, f"`op` must be one of {', '.join(FORMAT_OPS)}, got {op!r}")
    raw_item = body.get("item")
    if not isinstance(raw_item, dict) or "item_id" not in raw_item:
        raise EventError(EventReason.MISSING_ITEM, "`item` must be an object with an `item_id`")
    top_version = _version(body["version"], "version") if body.get("version") is not None else None

    if op == "delete":
        item_id = _delete_id(raw_item["item_id"])
        if top_version is None:
            raise EventError(EventReason.BAD_VERSION, "`version` is required for a delete")
        if "version" in raw_item and _version(raw_item["version"], "item.version") != top_version:
            raise EventError(EventReason.VERSION_MISMATCH, "`item.version` differs from `version`")
        version = top_version
        item = None
    else:
        if "version" in raw_item:
            inner = _version(raw_item["version"], "item.version")
            if top_version is not None and inner != top_version:
                raise EventError(
                    EventReason.VERSION_MISMATCH, f"`item.version` ({inner}) differs from `version` ({top_version})"
                )
            version = inner
        elif top_version is not None:
            version = top_version
        else:
            raise EventError(EventReason.BAD_VERSION, "`version` is required (top level or in `item`)")
        try:
            item = Item.model_validate({**raw_item, "version": version})
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise EventError(EventReason.INVALID_ITEM, f"`item.{loc}`: {first['msg']}") from None
        item_id = item.item_id
    if key is not None and key.strip() != item_id:
        raise EventError(EventReason.KEY_MISMATCH, f"record key {key!r} differs from `item.item_id` {item_id!r}")
    return ItemEvent(op=op, item_id=item_id, version=version, item=item)


def decode_event(key: bytes | str | None, value: bytes | str | None) -> ItemEvent:
    """Decode and validate one Kafka record; raises :class:`EventError` with the reason."""
    key_text = _text(key, "key")
    if key_text is None or not key_text.strip():
        raise EventError(EventReason.MISSING_KEY, "the record has no key (it must be the `item_id`)")
    text = _text(value, "value")
    if text is None:
        raise EventError(EventReason.MALFORMED_JSON, "the record has no value")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, >4300-digit ints, deep nesting
        raise EventError(EventReason.MALFORMED_JSON, f"the value is not JSON: {_json_error(e)}") from None
    return event_from_dict(body, key_text)


def _json_error(e: Exception) -> str:
    """Short reason for a value ``json.loads`` refused (decode errors keep their position)."""
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} at char {e.pos}"
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return str(e)


def parse_line(line: str) -> ItemEvent:
    """One JSONL line of an event file: either an event object or a bare item (an upsert).

    A bare item is told apart by having no ``op``; it is published at its own ``version``
    (default 0).
    """
    try:
        body = json.loads(line)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, >4300-digit ints, deep nesting
        raise EventError(EventReason.MALFORMED_JSON, f"not JSON: {_json_error(e)}") from None
    if isinstance(body, dict) and "op" not in body and "item_id" in body:
        body = {"op": "upsert", "item": body}
        body["version"] = body["item"].get("version", 0)
    return event_from_dict(body, None)
