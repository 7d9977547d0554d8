"""Failed-query learning (issue 22 item 2): records, diagnosis, the cycle's outputs and report."""

from __future__ import annotations

import json

import pytest

from tandem.errors import InvalidInput
from tandem.failed import FailedQuery, Vocabulary, decode_failed, diagnose, encode_failed, failure_reason
from tandem.failed.cycle import Corrections, read_report, run_cycle
from tandem.failed.events import FailedQueryError
from tandem.feedback.events import FeedbackEvent

TITLES = ["Cordless Drill Kit 18-Volt", "Cordless Drill Driver", "Garden Hose 50 ft.", "Garden Hose Nozzle",
          "Rain Bird Sprinkler Head", "Rain Bird Sprinkler Timer"]
T0 = 1_800_000_000.0


def test_failure_reason_and_codec():
    assert failure_reason(0, None, None) == "zero_hits"
    assert failure_reason(5, 0.1, 0.5) == "low_score" and failure_reason(5, 0.9, 0.5) is None
    f = FailedQuery("r1", "u1", "cordles drill", "no_click", 10, 0.0, T0)
    assert decode_failed(*encode_failed(f)) == f
    with pytest.raises(FailedQueryError, match="`reason`"):
        decode_failed(None, json.dumps({**f.to_dict(), "reason": "bored"}))
    with pytest.raises(FailedQueryError, match="unknown fields"):
        decode_failed(None, json.dumps({**f.to_dict(), "extra": 1}))


def test_diagnosis_kinds():
    vocab = Vocabulary(TITLES)
    assert diagnose("cordlss drill", vocab).correction == "cordless drill"
    assert diagnose("drlil kit", vocab).kind == "misspelling"  # adjacent swap
    unknown = diagnose("zzqqx hose", vocab)
    assert unknown.kind == "unknown_term" and "zzqqx" in unknown.nearest
    assert diagnose("garden sprinkler", vocab, clicked=["i9"]).kind == "vocabulary_gap"
    assert diagnose("garden sprinkler", vocab).kind == "unresolved"


def test_cycle_writes_samples_corrections_and_report(tmp_path):
    vocab = Vocabulary(TITLES)
    fails = [FailedQuery(f"r{n}", "u1", "Cordlss drill", "no_click", 10, 0.0, T0) for n in range(3)]
    fails.append(FailedQuery("g1", "u2", "garden sprinkler", "zero_hits", 0, 0.0, T0))
    later = [FeedbackEvent("g2", "u2", "i7", "click", 1, T0 + 60),
             FeedbackEvent("g3", "u2", "i8", "click", 1, T0 + 99_999)]  # outside the session
    report = run_cycle(fails, vocab, tmp_path, feedback=later, search=lambda q: ["i1", "i2"] if "cordless" in q else [])
    assert report["kinds"] == {"misspelling": 1, "vocabulary_gap": 1}
    assert report["top"][0]["count"] == 3 and report["top"][0]["action"] == "corrected to 'cordless drill'"
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert {(s["query"], tuple(s["item_ids"])) for s in samples} == {("cordlss drill", ("i1", "i2")),
                                                                     ("garden sprinkler", ("i7",))}
    assert Corrections.load(tmp_path).rewrite("CORDLSS  drill") == "cordless drill"
    assert Corrections.load(tmp_path).rewrite("garden hose") == "garden hose"
    assert read_report(tmp_path)["failures"] == 4
    with pytest.raises(InvalidInput, match="report.json"):
        read_report(tmp_path / "nothing")


def test_emitter_queues_failures_only_and_never_blocks():
    import threading

    from tandem_services.learning import FailedSearchEmitter

    got, gate = [], threading.Event()

    class Publisher:
        def send(self, records):
            gate.wait(2)
            got.extend(records)

    emitter = FailedSearchEmitter(Publisher(), min_score=0.5, max_queue=1, batch=1)
    assert not emitter.observe("r0", "u", "drill", 10, 0.9)
    assert emitter.observe("r1", "u", "drill", 0, None)
    emitter.observe("r2", "u", "drill", 3, 0.1)
    emitter.observe("r3", "u", "drill", 0, None)
    assert emitter.dropped >= 1  # the queue holds one: the rest is dropped, not waited for
    gate.set()
    emitter.close()
    assert got[0].reason == "zero_hits" and {r.request_id for r in got} <= {"r1", "r2", "r3"}


def test_cli_cycle_and_report(tmp_path):
    from typer.testing import CliRunner

    from tandem_app.cli import app

    catalog = tmp_path / "items.jsonl"
    catalog.write_text("".join(json.dumps({"item_id": f"i{n}", "title": t}) + "\n" for n, t in enumerate(TITLES)))
    failed = tmp_path / "failed.jsonl"
    failed.write_text(json.dumps(FailedQuery("r1", "u1", "cordlss drill", "zero_hits", 0, 0.0, T0).to_dict()) + "\n")
    run = CliRunner().invoke(app, ["failed", "cycle", "--failed", str(failed), "--catalog", str(catalog),
                                   "--out", str(tmp_path / "c")])
    assert run.exit_code == 0, run.output
    shown = CliRunner().invoke(app, ["failed", "report", str(tmp_path / "c")])
    assert shown.exit_code == 0 and "corrected to 'cordless drill'" in shown.output
    missing = CliRunner().invoke(app, ["failed", "report", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "report.json" in missing.output


def test_collector_appends_and_reads_back(tmp_path):
    from tandem.failed.stream import FailedQueryCollector, read_failed

    f = FailedQuery("r1", "u1", "cordlss drill", "no_click", 10, 0.0, T0)
    collector = FailedQueryCollector(tmp_path / "f.jsonl")
    assert collector.apply([f, f]).applied == 2 and collector.store.seq == 2  # the consumer reads store.seq
    assert list(read_failed(tmp_path / "f.jsonl")) == [f, f]
