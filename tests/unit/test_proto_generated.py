"""The checked-in generated protobuf code must equal what the one generator produces."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date() -> None:
    proc = subprocess.run([sys.executable, "scripts/gen_proto.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_proto_package_matches_python_import_path() -> None:
    from tandem.v1 import item_pb2

    assert item_pb2.DESCRIPTOR.package == "tandem.v1"
    event = item_pb2.ItemEvent(op=item_pb2.ItemEvent.OP_UPSERT,
                               item=item_pb2.Item(item_id="a1", title="drill"), version=3)
    assert item_pb2.ItemEvent.FromString(event.SerializeToString()) == event


def test_check_detects_a_stale_file(tmp_path: Path) -> None:
    """Copy the tree, edit one generated file, and expect --check to fail naming it."""
    import shutil

    for part in ("scripts", "proto", "platform/tandem/v1"):
        shutil.copytree(ROOT / part, tmp_path / part)
    target = tmp_path / "platform/tandem/v1/item_pb2.py"
    target.write_text(target.read_text() + "\n# edited by hand\n")
    proc = subprocess.run([sys.executable, "scripts/gen_proto.py", "--check"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "item_pb2.py" in proc.stderr
