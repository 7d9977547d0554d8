"""``tandem registry`` and ``tandem stream`` commands that need no broker or JVM."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tandem_app.cli import app
from tandem.streams.config import StreamSettings

runner = CliRunner()
EVENTS = Path(__file__).resolve().parents[1] / "data" / "streams" / "events.jsonl"


def test_registry_publish_list_show_promote(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ids.json").write_text('{"a": [1, 2]}')
    uri = str(tmp_path / "reg")
    r1 = runner.invoke(app, ["registry", "publish", "id-map", str(src), "--metric", "dup_rate=0.01", "--uri", uri])
    assert r1.exit_code == 0, r1.output
    v1 = r1.output.strip()
    r2 = runner.invoke(app, ["registry", "publish", "id-map", str(src), "--parent", f"id-map:{v1}", "--uri", uri])
    v2 = r2.output.strip()
    assert runner.invoke(app, ["registry", "promote", "id-map", v1, "--uri", uri]).exit_code == 0
    listing = runner.invoke(app, ["registry", "list", "id-map", "--uri", uri])
    assert listing.exit_code == 0 and v1 in listing.output and v2 in listing.output
    shown = runner.invoke(app, ["registry", "show", "id-map", "--uri", uri])
    assert shown.exit_code == 0 and json.loads(shown.output.split("# verified")[0])["version"] == v1
    stale = runner.invoke(app, ["registry", "promote", "id-map", v2, "--expected", v2, "--uri", uri])
    assert stale.exit_code == 2 and "`expected`" in stale.output
    bad = runner.invoke(app, ["registry", "publish", "model", str(src), "--uri", uri])
    assert bad.exit_code == 2 and "`kind`" in bad.output
    (tmp_path / "reg" / "id-map" / v2 / "ids.json").write_text("tampered")
    refused = runner.invoke(app, ["registry", "show", "id-map", v2, "--uri", uri])
    assert refused.exit_code == 2 and "checksum mismatch" in refused.output


def test_stream_consume_from_file_store_only_and_snapshot(tmp_path: Path) -> None:
    store, rejects = tmp_path / "c.sqlite", tmp_path / "rejects.jsonl"
    args = ["stream", "consume", "--from-file", str(EVENTS), "--no-index", "--store", str(store),
            "--rejects", str(rejects)]  # fmt: skip
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert [json.loads(x)["reason"] for x in rejects.read_text().splitlines()] == [
        "unknown_op", "invalid_item", "malformed_json",
    ]  # fmt: skip
    again = runner.invoke(app, args)  # replaying a file is a no-op
    assert "applied 0" in again.output.replace("\n", " ")
    status = json.loads(runner.invoke(app, ["stream", "status", "--store", str(store)]).output)
    assert (status["items"], status["tombstones"], status["seq"]) == (3, 1, 6)
    assert status["quarantined"] == 0 and status["quarantined_by_rule"] == {}
    snap = runner.invoke(app, ["stream", "snapshot", str(tmp_path / "snap"), "--store", str(store),
                               "--publish", "--promote", "--uri", str(tmp_path / "reg")])  # fmt: skip
    assert snap.exit_code == 0, snap.output
    from tandem.registry import Registry

    art = Registry(tmp_path / "reg").resolve_current("snapshot")
    assert set(art.manifest.files) == {"items.jsonl", "manifest.json"}
    assert art.manifest.metrics["items"] == 3
    rows = [json.loads(x) for x in (tmp_path / "snap" / "items.jsonl").read_text().splitlines()]
    assert {r["item_id"]: r["version"] for r in rows} == {"d1": 2, "l1": 1, "s1": 1}


def test_stream_settings_map_the_charts_env_to_kafka_options(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TANDEM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TANDEM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("TANDEM_KAFKA_SASL_USERNAME", "ingest")
    monkeypatch.setenv("TANDEM_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("TANDEM_KAFKA_SSL_CAFILE", "/etc/tandem/kafka-ca/ca.crt")
    monkeypatch.setenv("TANDEM_DEVICE", "cpu")  # another component's variable: ignored here
    s = StreamSettings()
    conf = s.kafka_client_config()
    assert conf == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "ingest",
        "sasl_plain_password": "s3cret", "ssl_cafile": "/etc/tandem/kafka-ca/ca.crt",
    }  # fmt: skip
    assert "s3cret" not in repr(s)
    monkeypatch.setenv("TANDEM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    assert StreamSettings().kafka_client_config() == {"security_protocol": "PLAINTEXT"}
