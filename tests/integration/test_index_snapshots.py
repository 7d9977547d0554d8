"""Index snapshots for readers on other nodes (issue 19 item 2): the writer's publisher puts
each new Lucene commit in the registry; a sparse server in another process, in snapshot mode,
serves an upsert within its poll interval, refuses a damaged or partial snapshot with a clear
error while serving the previous one, and recovers at the next good one; old snapshots are
deleted (keep = 2)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tandem.catalog.item import Item
from tandem_testing.tiny_catalog import tiny_catalog
from tandem_services.client import RemoteRetriever

pytestmark = pytest.mark.integration

EVERY_S = POLL_S = 0.2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(check: Callable[[], bool], timeout_s: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            if check():
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - not serving yet
            pass
        time.sleep(0.05)
    return None


def _point_at(registry: Path, version: str) -> None:
    """Make ``version`` current by writing the pointer directly (as a torn upload or a buggy
    publisher could; Registry.promote itself would refuse an unverifiable version)."""
    (registry / "index" / "CURRENT.json").write_text(json.dumps({"version": version, "history": []}))


def test_a_reader_in_another_process_follows_verified_snapshots(tmp_path: Path, java_home: object) -> None:
    from tandem.registry.store import Registry
    from tandem.sparse import SparseRetriever, build_index
    from tandem.sparse.snapshots import KIND, SnapshotPublisher, stage_commit

    index, reg_dir = tmp_path / "index", tmp_path / "registry"
    build_index(tiny_catalog(), index)
    port, log_path = _free_port(), tmp_path / "reader.log"
    tandem = Path(sys.executable).with_name("tandem")
    with SparseRetriever(index) as writer, SnapshotPublisher(index, str(reg_dir), every_s=EVERY_S, keep=2) as pub, \
            log_path.open("w") as log:
        reader = subprocess.Popen([str(tandem), "serve", "sparse", f"--index={tmp_path / 'local'}",
                                   f"--snapshots={reg_dir}", f"--snapshot-poll-s={POLL_S}", f"--port={port}"],
                                  stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OPENAI_API_KEY": "x"})
        remote = RemoteRetriever(f"127.0.0.1:{port}", "bm25", timeout_s=5)

        def ids(query: str) -> list[str]:
            return [h.item_id for h in remote.retrieve([query], 5)[0]]

        try:
            assert _until(lambda: ids("drill") != [], 90) is not None, log_path.read_text()[-2000:]
            writer.upsert([Item(item_id="w1", title="Wombat Gutter Guard")])
            seen = _until(lambda: ids("wombat") == ["w1"], 10)
            assert seen is not None and seen < EVERY_S + POLL_S + 2.0, seen

            # A damaged and then a partial snapshot: refused, the last good one keeps serving.
            pub.stop()
            writer.upsert([Item(item_id="q1", title="Quokka Wheelbarrow")])
            reg = Registry(str(reg_dir))
            bad = []
            for damage in ("flip", "drop"):
                _, staged = stage_commit(index, tmp_path / "staging")
                version = reg.publish(KIND, staged)
                shutil.rmtree(staged)
                # A file the served snapshot lacks (unchanged files are linked from the reader's
                # verified copy, so damage to them in the store would not matter).
                served = set(reg.manifest(KIND, pub.published).files)
                victim = max((p for p in (reg_dir / "index" / version).iterdir()
                              if p.name.startswith("_") and p.name not in served), key=lambda p: p.stat().st_size)
                if damage == "flip":
                    data = bytearray(victim.read_bytes())
                    data[len(data) // 2] ^= 0xFF
                    victim.write_bytes(bytes(data))
                else:
                    victim.unlink()
                _point_at(reg_dir, version)
                bad.append(version)
                time.sleep(4 * POLL_S)
                assert ids("quokka") == [] and ids("wombat") == ["w1"]
            log_text = log_path.read_text()
            assert f"refusing index snapshot {bad[0]}" in log_text and "checksum mismatch" in log_text, log_text[-2000:]
            assert f"refusing index snapshot {bad[1]}" in log_text and "partial snapshot" in log_text

            good = SnapshotPublisher(index, reg, every_s=EVERY_S, keep=2).publish_once()
            assert good is not None and _until(lambda: ids("quokka") == ["q1"], 10) is not None
            assert reg.versions(KIND)[-1] == good and len(reg.versions(KIND)) == 2  # older ones deleted
        finally:
            remote.close()
            reader.terminate()
            reader.wait(timeout=30)
