"""Child-process lifecycle for the test servers: free ports, bounded startup, clean shutdown.

:class:`ServerProcess` is the base of :class:`~tandem_testing.kafka_broker.KafkaBroker` and
:class:`~tandem_testing.redis_server.RedisServer`: it owns what every such server shares
(a private data folder, a log file, a startup that waits for a real answer and retries on a
port race, SIGTERM-then-SIGKILL shutdown, ``kill()``/``restart()`` for fault tests), so
each engine's module only says how to configure, run and ask it. Split from
:mod:`tandem_testing.infra`, which still re-exports every name.
"""

from __future__ import annotations

import abc
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from tandem.errors import Unavailable

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1", avoid: int | None = None) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it).

    ``avoid``: a port already chosen but not yet bound, which the OS could hand out again.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port != avoid:
            return port


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds within ``timeout_s``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _die_with_parent() -> list[str]:
    """Command prefix that makes the kernel SIGTERM the server when the test process dies.

    Keeps a crashed or SIGKILLed pytest from leaving brokers behind. util-linux ``setpriv``
    (essential on Debian) sets the flag and execs the server, so the pid stays the server's;
    a ``preexec_fn`` would do the same but is unsafe in a process with threads, which
    kafka-python clients start. Linux ties the signal to the thread that forked, so start
    servers from a thread that outlives them (pytest's main one). Empty where unavailable.
    """
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


class ServerProcess(abc.ABC):
    """A server run as a child process with a bounded, checked startup and clean shutdown.

    Subclasses say how to prepare the data folder, which command to run and how to tell
    that the server answers; this class owns the process lifecycle.
    """

    name: str = "server"

    def __init__(self, *, data_dir: Path | None = None, startup_timeout_s: float = 90.0) -> None:
        self._owns_dir = data_dir is None
        if data_dir is None:
            data_dir = Path(tempfile.mkdtemp(prefix=f"tandem-{self.name}-"))
        self.data_dir = data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.startup_timeout_s = startup_timeout_s
        self.log_path = self.data_dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self.last_startup_s: float | None = None
        """Seconds the most recent start took from launch to a successful readiness check."""

    # -- what subclasses provide ---------------------------------------------------------
    @abc.abstractmethod
    def _prepare(self) -> None:
        """Create config and storage in ``data_dir``; runs once, before the first start."""

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    @abc.abstractmethod
    def _ready(self, remaining_s: float) -> bool:
        """Whether the server answers a real request now (must not block past ``remaining_s``)."""

    @abc.abstractmethod
    def _new_ports(self) -> None:
        """Pick other free ports after a port race at first start (raise when ports are fixed)."""

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """Process id while running, else ``None``."""
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start the server and wait until it answers; raises :class:`Unavailable` if it does not.

        A free port can be taken by someone else between choosing and binding it; when the
        first start fails that way, new ports are chosen (up to three tries).
        """
        if self.running:
            return self
        first = not self._prepared
        for attempt in range(3):
            if not self._prepared:
                self._prepare()
                self._prepared = True
            try:
                self._launch_and_wait()
                return self
            except Unavailable:
                if first and attempt < 2 and "Address already in use" in self.log_tail():
                    log.warning("%s: port taken during startup; retrying on new ports", self.name)
                    self._new_ports()
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch_and_wait(self) -> None:
        t0 = time.monotonic()
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                [*_die_with_parent(), *self._command()],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = t0 + self.startup_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise Unavailable(
                    f"{self.name} exited with code {code} during startup; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise Unavailable(
                    f"{self.name} did not answer within {self.startup_timeout_s:.0f} s; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if self._ready(remaining):
                self.last_startup_s = time.monotonic() - t0
                log.info("%s ready in %.1f s", self.name, self.last_startup_s)
                return
            time.sleep(0.1)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL after ``timeout_s``; data is kept."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0f s; killing it", self.name, timeout_s)
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Crash the server (SIGKILL, no shutdown work); data is kept for a later ``start``."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> Self:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its data folder when this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def wait_until(check: Callable[[], bool], what: str, timeout_s: float) -> None:
    """Poll ``check()`` until true; raises :class:`Unavailable` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise Unavailable(f"{what} did not answer within {timeout_s:.0f} s")
        time.sleep(0.2)
