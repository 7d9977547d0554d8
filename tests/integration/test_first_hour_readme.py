"""The README's "Real components" walkthrough, run as written in a fresh clone: `make up`, the
doctor, index build, search, serve, health, publish → consume → the new item found through the
running server, `make down`.

The commands are taken from the section's first ``console`` block (its ``$ `` lines) and run
in order by one bash, so backgrounding, ``export`` and ``kill %1`` behave as in a terminal.
Only the ports change: 6379, 9092 and 50051 become free ones (``make up`` reads REDIS_PORT and
KAFKA_PORT from the environment), so the test never meets a developer's own servers. The
clone borrows this checkout's ``.venv`` and the Kafka jars ``make setup`` fetched, and sees the
benchmark data as ``../shared/data`` like a developer's clone does.

Set ``TANDEM_README_TRANSCRIPT=FILE`` to keep the transcript (ports put back, JVM start-up
warnings dropped): it is what the README shows.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Real components"
#: The ports the README uses, in the order free ones are assigned.
PORTS = ("6379", "9092", "50051")
_JVM_NOISE = re.compile(r"^(WARNING: |[A-Z][a-z]{2} \d{2}, \d{4} .*org\.apache\.lucene)")


def readme_commands(readme: str) -> list[str]:
    """The ``$ `` lines of the first console block of the "Real components" section."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start:end if end >= 0 else None]
    block = re.search(r"```console\n(.*?)```", section, re.S)
    assert block, f"{SECTION} has no console block"
    return [line[2:] for line in block.group(1).splitlines() if line.startswith("$ ")]


def _free_ports(n: int) -> list[int]:
    """``n`` free loopback ports whose successor is free too (Kafka's controller takes port + 1)."""
    out: list[int] = []
    while len(out) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        if port not in out and port + 1 not in out:
            out.append(port)
    return out


def _script(commands: list[str]) -> str:
    """Bash running ``commands`` verbatim, marking each one's output and exit status, stopping
    at the first failure, and always stopping the background server and `make up`'s servers."""
    lines = ["set -u", "trap 'kill %1 2>/dev/null; make -s down >/dev/null 2>&1' EXIT"]
    for n, cmd in enumerate(commands):
        lines += [f"echo '@@{n}'", cmd, "rc=$?", f'echo "@@rc {n} $rc"', '[ "$rc" -eq 0 ] || exit "$rc"']
    return "\n".join(lines) + "\n"


def _outputs(log: str) -> dict[int, str]:
    """Each command's output by its index (``@@n`` ... ``@@rc n``)."""
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^@@(\d+)\n(.*?)^@@rc \1 \d+$", log, re.S | re.M)}


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A fresh clone of this repository with the checkout's virtualenv, Kafka jars and data."""
    from tandem.catalog.datasets import data_root
    from tandem_testing.infra import kafka_libs_dir

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `make setup` (scripts/redis.sh install)")
    libs = kafka_libs_dir()
    data = data_root()
    dest = tmp_path / "tandem"
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True, timeout=120)
    (dest / ".venv").symlink_to(REPO / ".venv")
    (dest / ".tandem" / "infra" / "kafka").mkdir(parents=True)
    (dest / ".tandem" / "infra" / "kafka" / "libs").symlink_to(libs)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data)
    return dest


def test_the_real_components_walkthrough_finds_a_published_item_through_the_server(clone: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = readme_commands(readme)
    ports = [str(p) for p in _free_ports(len(PORTS))]
    mapping = dict(zip(PORTS, ports, strict=True))
    script = _script([re.sub("|".join(PORTS), lambda m: mapping[m.group(0)], c) for c in commands])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env |= {"REDIS_PORT": mapping["6379"], "KAFKA_PORT": mapping["9092"], "COLUMNS": "120"}
    proc = subprocess.run(["bash", "-c", script], cwd=clone, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900)
    log = proc.stdout
    if target := os.environ.get("TANDEM_README_TRANSCRIPT"):
        Path(target).write_text(transcript(commands, _outputs(log), mapping), encoding="utf-8")
    assert proc.returncode == 0, log[-6000:]
    outputs = _outputs(log)
    assert len(outputs) == len(commands), log[-6000:]
    through_server = [n for n, c in enumerate(commands) if c.startswith(".venv/bin/tandem search")
                      and "--server" in c and outputs[n].find("900001") >= 0]
    assert through_server, "the published item 900001 was not found through the running server:\n" + log[-6000:]
    first = outputs[through_server[0]]
    assert re.search(r"│ 1 │ 900001 ", first), first
    health = next(n for n, c in enumerate(commands) if c.startswith(".venv/bin/tandem health"))
    assert re.search(r"^dependency cache +SERVING$", outputs[health], re.M), outputs[health]


def transcript(commands: list[str], outputs: dict[int, str], mapping: dict[str, str]) -> str:
    """The run as a console session with the README's ports, without JVM start-up warnings."""
    back = {v: k for k, v in mapping.items()}
    pattern = "|".join(re.escape(p) for p in back)
    out = []
    for n, cmd in enumerate(commands):
        out.append(f"$ {cmd}")
        for line in outputs.get(n, "").splitlines():
            if not _JVM_NOISE.match(line):
                out.append(re.sub(pattern, lambda m: back[m.group(0)], line))
    return "\n".join(out) + "\n"
