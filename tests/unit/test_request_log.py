"""The request log that joins feedback to its query (issue 22 item 3): codec, bounded store,
the join into multi-task labels, and λ per task in the fusion training labels."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tandem.feedback.events import FeedbackEvent
from tandem.feedback.requests import (RequestLog, RequestRecord, RequestRecordError, behaviour_events,
                                      decode_request, encode_request)

NOW = time.time()


def _rec(n: int, query: str = "cordless drill") -> RequestRecord:
    return RequestRecord(f"r{n}", "u1", query, ("t01", "t02"), NOW + n)


def test_codec_round_trips_and_names_the_bad_field() -> None:
    r = _rec(1)
    assert decode_request(*encode_request(r)) == r
    for value, field in (('{"request_id": "", "query": "x", "item_ids": [], "ts": 1}', "request_id"),
                         ('{"request_id": "a", "query": "x", "item_ids": "t1", "ts": 1}', "item_ids"),
                         ('{"request_id": "a", "query": "x", "item_ids": [], "ts": "now"}', "ts"),
                         ("[1]", "object")):
        with pytest.raises(RequestRecordError, match=field):
            decode_request(None, value)


def test_log_is_bounded_and_a_replay_adds_nothing(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "requests.sqlite", max_rows=3)
    assert log.add([_rec(n) for n in range(5)]) == 5
    assert log.add([_rec(4)]) == 0 and len(log) == 3
    assert sorted(log.get(["r0", "r3", "r4", "zz"])) == ["r3", "r4"]
    log.close()


def test_feedback_joins_its_query_and_unjudged_queries_get_their_own_qid(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "requests.sqlite")
    log.add([_rec(1, "Cordless  Drill"), _rec(2, "blue paint")])
    fb = [FeedbackEvent("r1", "u1", "t01", "click", 1, NOW), FeedbackEvent("r1", "u1", "t01", "purchase", 1, NOW),
          FeedbackEvent("r1", "u1", "t02", "impression", 2, NOW), FeedbackEvent("r2", "u1", "t11", "click", 3, NOW),
          FeedbackEvent("gone", "u1", "t05", "click", 1, NOW)]
    events, extra = behaviour_events(log, fb, {"q7": "cordless drill"})
    (fbq,) = extra
    assert extra == {fbq: "blue paint"} and fbq.startswith("fb-")
    assert events == {"q7": {"t01": {"click", "purchase"}}, fbq: {"t11": {"click"}}}
    log.close()


def test_lambdas_weigh_relevance_clicks_and_purchases() -> None:
    from tandem.fusion.learned import combine_labels

    grades, ev = {"a": 2, "b": 0}, {"b": {"click", "purchase"}, "c": {"click"}}
    assert combine_labels(grades, ev, 1.0, 2.0) == {"a": 2, "b": 3, "c": 1}
    assert combine_labels({i: 0.0 * g for i, g in grades.items()}, ev, 1.0, 2.0) == {"a": 0, "b": 3, "c": 1}
