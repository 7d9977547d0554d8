"""Fuzz targets for item events: Kafka records (``decode_event``) and event-file lines (``parse_line``).

Events come from producers the platform does not control: a record's key may be missing or
not UTF-8, its value truncated, not JSON or an item that fails validation. Each accepted
event must be consistent (an upsert carries its own id and version, a delete no body) and
survive Tandem's own codec unchanged; each refusal is an :class:`EventError` with a known
reason. Failure type and shared strategies: :mod:`tandem_testing.fuzz`.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tandem.catalog.events import EventError, EventReason, ItemEvent, decode_event, encode_event, parse_line
from tandem_testing.fuzz import FuzzFailure, _crash, dump_json, full_text, item_bodies, json_values, odd_versions

# --------------------------------------------------------------------------- strategies


def _good_events() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"op": st.sampled_from(["upsert", "delete"]), "item": item_bodies(), "version": st.integers(0, 1)},
    )


def event_bodies() -> st.SearchStrategy[Any]:
    """Decoded event values: near-valid ``{op, item, version}`` objects and arbitrary JSON."""
    body = st.fixed_dictionaries(
        {"op": st.one_of(st.sampled_from(["upsert", "delete"]), full_text, json_values)},
        optional={"item": item_bodies(), "version": odd_versions, "extra": json_values},
    )
    return st.one_of(_good_events(), body, json_values)


_encodings = st.sampled_from(["bytes", "bytes", "str", "truncated", "raw"])
_raw_values = st.one_of(st.binary(max_size=64), st.none(), full_text)
_key_kinds = st.sampled_from(["own_bytes", "own_text", "other"])
_other_keys = st.one_of(st.sampled_from([b"t01", " t01", b"", None, b"\xff\xfe"]), st.binary(max_size=8), full_text)


def event_records() -> st.SearchStrategy[tuple[Any, Any]]:
    """``(key, value)`` Kafka records: encoded near-valid events, truncated or raw bytes, and
    keys that match, differ, are blank, missing or not UTF-8."""

    def encode(body: Any, how: str) -> bytes | str:
        text = dump_json(body)
        if how == "str":
            return text
        data = text.encode("utf-8", "surrogatepass")
        return data[: len(data) // 2] if how == "truncated" else data

    @st.composite
    def records(draw: st.DrawFn) -> tuple[Any, Any]:
        body = draw(event_bodies())
        how = draw(_encodings)
        value = draw(_raw_values) if how == "raw" else encode(body, how)
        item = body.get("item") if isinstance(body, dict) else None
        own = item.get("item_id") if isinstance(item, dict) else None
        # The body's own id (as a producer would key it) half the time, so validation gets past the key.
        which = draw(_key_kinds)
        own_text = own if isinstance(own, str) else str(own)
        if which == "own_bytes":
            return own_text.encode("utf-8", "surrogatepass"), value
        if which == "own_text":
            return own_text, value
        return draw(_other_keys), value

    return records()


def event_lines() -> st.SearchStrategy[str]:
    """Lines of an event file: events, bare items, arbitrary JSON and non-JSON text."""
    return st.one_of(event_bodies().map(dump_json), item_bodies().map(dump_json), full_text,
                     st.builds(lambda s, n: s[:n], event_bodies().map(dump_json), st.integers(0, 40)))


# --------------------------------------------------------------------------- properties


def _check_event(event: ItemEvent, target: str, value: Any) -> None:
    if event.op == "upsert" and (event.item is None or event.item.version != event.version
                                 or event.item.item_id != event.item_id):
        raise FuzzFailure(f"{target}: inconsistent upsert {event!r:.300} from {value!r:.300}")
    if event.op == "delete" and event.item is not None:
        raise FuzzFailure(f"{target}: delete with a body {event!r:.300} from {value!r:.300}")
    try:  # what we accept must survive our own codec unchanged
        again = decode_event(*encode_event(event))
    except Exception as exc:
        raise FuzzFailure(f"{target}: re-encoding {event!r:.300} failed: {type(exc).__name__}: {exc!s:.200}") from exc
    if again != event:
        raise FuzzFailure(f"{target}: codec round trip changed {event!r:.300} into {again!r:.300}")


def check_event_record(key: Any, value: Any) -> str:
    """``decode_event`` returns a consistent :class:`ItemEvent` whose id is the record key,
    or raises :class:`EventError` with a known reason; never another exception. Returns
    ``"ok"`` or the reason code."""
    try:
        event = decode_event(key, value)
    except EventError as exc:
        if not isinstance(exc.reason, EventReason) or not str(exc):
            raise FuzzFailure(f"decode_event: EventError without reason/message for {value!r:.300}") from None
        return exc.reason.value
    except Exception as exc:
        raise _crash("decode_event", exc, (key, value)) from exc
    key_text = key.decode("utf-8") if isinstance(key, bytes) else key
    if event.item_id != key_text.strip():
        raise FuzzFailure(f"decode_event: item_id {event.item_id!r} is not the key {key!r}")
    _check_event(event, "decode_event", value)
    return "ok"


def check_event_line(line: str) -> str:
    """``parse_line`` returns a consistent event or raises :class:`EventError`; nothing else."""
    try:
        event = parse_line(line)
    except EventError as exc:
        if not isinstance(exc.reason, EventReason) or not str(exc):
            raise FuzzFailure(f"parse_line: EventError without reason/message for {line!r:.300}") from None
        return exc.reason.value
    except Exception as exc:
        raise _crash("parse_line", exc, line) from exc
    _check_event(event, "parse_line", line)
    return "ok"
