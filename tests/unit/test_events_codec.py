"""The item-event codec: round trips and every refusal reason."""

from __future__ import annotations

import json

import pytest

from tandem.catalog.events import EventError, EventReason, ItemEvent, decode_event, encode_event, parse_line
from tandem.catalog.item import Item
from tandem.errors import InvalidInput


def _value(**body: object) -> bytes:
    return json.dumps(body).encode()


def test_upsert_round_trip_stamps_the_version_on_the_item() -> None:
    item = Item(item_id="d1", title="Cordless  Drill", brand="Volta", price=99.0, attributes={"v": "20V"})
    ev = ItemEvent.upsert(item, 7)
    assert ev.item is not None and ev.item.version == 7
    key, value = encode_event(ev)
    assert key == b"d1"
    assert json.loads(value)["op"] == "upsert"
    assert decode_event(key, value) == ev


def test_delete_round_trip() -> None:
    ev = ItemEvent.delete("d1", 9)
    assert decode_event(*encode_event(ev)) == ev


def test_version_may_come_from_the_item_only() -> None:
    ev = decode_event(b"a", _value(op="upsert", item={"item_id": "a", "title": "T", "version": 4}))
    assert ev.version == 4


@pytest.mark.parametrize(
    ("key", "value", "reason", "field"),
    [
        (b"a", b"{not json", EventReason.MALFORMED_JSON, "JSON"),
        (b"a", b"\xff\xfe", EventReason.MALFORMED_JSON, "value"),
        (b"a", None, EventReason.MALFORMED_JSON, "value"),
        (b"a", b"[1, 2]", EventReason.NOT_AN_OBJECT, "object"),
        (b"a", _value(op="merge", item={"item_id": "a", "title": "T"}, version=1), EventReason.UNKNOWN_OP, "`op`"),
        (b"a", _value(op="upsert", version=1), EventReason.MISSING_ITEM, "`item`"),
        (b"a", _value(op="upsert", item="a", version=1), EventReason.MISSING_ITEM, "`item`"),
        (None, _value(op="upsert", item={"item_id": "a", "title": "T"}, version=1), EventReason.MISSING_KEY, "key"),
        (b"b", _value(op="upsert", item={"item_id": "a", "title": "T"}, version=1), EventReason.KEY_MISMATCH, "`item.item_id`"),
        (b"a", _value(op="upsert", item={"item_id": "a", "title": ""}, version=1), EventReason.INVALID_ITEM, "`item.title`"),
        (b"a", _value(op="upsert", item={"item_id": "a", "title": "T", "price": -1}, version=1), EventReason.INVALID_ITEM, "`item.price`"),
        (b"a", _value(op="upsert", item={"item_id": "a", "title": "T", "colour": "red"}, version=1), EventReason.INVALID_ITEM, "`item.colour`"),
        (b"a", _value(op="upsert", item={"item_id": "a", "title": "T", "version": 2}, version=3), EventReason.VERSION_MISMATCH, "`item.version`"),
        (b"a", _value(op="upsert", item={"item_id": "a", "title": "T"}, version=-1), EventReason.BAD_VERSION, "`version`"),
        (b"a", _value(op="upsert", item={"item_id": "a", "title": "T"}, version=True), EventReason.BAD_VERSION, "`version`"),
        (b"a", _value(op="upsert", item={"item_id": "a", "title": "T"}), EventReason.BAD_VERSION, "`version`"),
        (b"a", _value(op="delete", item={"item_id": "a"}), EventReason.BAD_VERSION, "`version`"),
        (b"a", _value(op="delete", item={"item_id": "a"}, version=2, extra=1), EventReason.UNKNOWN_FIELD, "`extra`"),
    ],
)
def test_refusals_carry_a_reason_and_name_the_field(
    key: bytes | None, value: bytes | None, reason: EventReason, field: str
) -> None:
    with pytest.raises(EventError) as info:
        decode_event(key, value)
    assert info.value.reason == reason
    assert field in str(info.value)
    assert isinstance(info.value, InvalidInput)


def test_event_model_rejects_inconsistent_construction() -> None:
    with pytest.raises(ValueError, match="`item`"):
        ItemEvent(op="upsert", item_id="a", version=1)
    with pytest.raises(ValueError, match="`item_id`"):
        ItemEvent(op="upsert", item_id="b", version=1, item=Item(item_id="a", title="T", version=1))


def test_parse_line_accepts_bare_items_and_events() -> None:
    bare = parse_line('{"item_id": "x", "title": "Hammer", "version": 3}')
    assert (bare.op, bare.item_id, bare.version) == ("upsert", "x", 3)
    assert parse_line('{"item_id": "y", "title": "Saw"}').version == 0
    ev = parse_line('{"op": "delete", "item": {"item_id": "x"}, "version": 4}')
    assert (ev.op, ev.version, ev.item) == ("delete", 4, None)
    with pytest.raises(EventError) as info:
        parse_line("{oops")
    assert info.value.reason == EventReason.MALFORMED_JSON
