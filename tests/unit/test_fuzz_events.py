"""Fuzzing of the item-event codec: any record or file line is a consistent ``ItemEvent``
(which survives a re-encode) or an ``EventError`` with a reason code; never another exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tandem_testing.fuzz_events import check_event_line, check_event_record, event_lines, event_records

FUZZ = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(event_records())
def test_decode_event_never_crashes(record) -> None:
    check_event_record(*record)


@FUZZ
@given(event_lines())
def test_parse_line_never_crashes(line: str) -> None:
    check_event_line(line)


def test_valid_and_refused_records() -> None:
    good = b'{"op":"upsert","item":{"item_id":"t01","title":"Drill"},"version":3}'
    assert check_event_record(b"t01", good) == "ok"
    assert check_event_record(b"t02", good) == "key_mismatch"
    assert check_event_record(b"t01", b'{"op":"delete","item":{"item_id":"t01"},"version":true}') == "bad_version"
    assert check_event_record(b"t01", b"\xff") == "malformed_json"
    assert check_event_line('{"item_id": "t01", "title": "Drill", "price": NaN}') == "invalid_item"
    assert check_event_line('{"item_id": "t01", "title": "Drill", "price": -1}') == "invalid_item"


# Regressions found by this fuzzing: json.loads raises ValueError / RecursionError (not
# JSONDecodeError) for these values; the codec must turn them into EventError.
HUGE_INT = b"1" * 5000
DEEP = b"[" * 100_000


def test_decode_event_huge_integer() -> None:
    check_event_record(b"t01", HUGE_INT)


def test_decode_event_deep_nesting() -> None:
    check_event_record(b"t01", DEEP)


def test_parse_line_huge_integer() -> None:
    check_event_line('{"item_id": "t01", "title": "x", "version": ' + "9" * 5000 + "}")
