"""Bearer-token sets that follow their files, and redaction of credentials in text.

A :class:`TokenSet` holds the SHA-256 digests of the tokens in one file (one per line, ``#``
comments) plus, optionally, comma-separated ones from an environment variable. It re-reads the
file when the file changes (inode, size or modification time — Kubernetes rotates a mounted
Secret by swapping a symlink, which changes all three), checked at most every ``check_s``,
so a rotated or revoked token takes effect without a restart. :class:`FileWatch` is that
change check on its own; the TLS certificate files use it too (:mod:`tandem_services.tls`). A file that becomes unreadable
or empty keeps the last good set (and logs it): opening the server, or locking everyone out,
because of a half-written Secret would both be worse.

:func:`redact` (from :mod:`tandem.cache.redact`) hides the password part of URL credentials
(``redis://user:pw@host`` → ``redis://user:***@host``): error messages to clients, log lines.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tandem.cache.redact import redact
from tandem.errors import InvalidInput

__all__ = ["FileWatch", "TokenSet", "read_token_file", "redact"]

log = logging.getLogger("tandem_services.auth")

#: What identifies one version of a file: (inode, size, modification time in ns) per file.
Stamp = tuple[tuple[int, int, int], ...]


class FileWatch:
    """Tells when any of ``paths`` changed since the version last :meth:`accept`-ed.

    A file's version is its (inode, size, mtime): a Kubernetes Secret or ConfigMap rotation
    swaps a symlink (``os.stat`` follows it: a new inode), an editor or ``cp`` changes size or
    mtime. :meth:`poll` stats the files at most every ``check_s`` (it sits on request paths:
    every authenticated call, every TLS handshake), so a change is seen within ``check_s``.
    """

    def __init__(self, paths: Sequence[Path], check_s: float = 1.0) -> None:
        self.paths = [Path(p) for p in paths]
        self.check_s = check_s
        self._stamp: Stamp | None = None
        self._next_check = 0.0

    def poll(self, force: bool = False) -> Stamp | None:
        """The files' current stamp when it differs from the accepted one and a check is due
        (always with ``force``); ``None`` otherwise. ``OSError`` when a file cannot be stat-ed."""
        now = time.monotonic()
        if not force and now < self._next_check:
            return None
        self._next_check = now + self.check_s
        stamp = tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in map(os.stat, self.paths))
        return None if stamp == self._stamp else stamp

    def accept(self, stamp: Stamp) -> None:
        """Record ``stamp`` as the version now in use (only after reading it succeeded, so a
        half-written file is read again at the next check)."""
        self._stamp = stamp

    @property
    def accepted(self) -> bool:
        """Whether any version was accepted yet."""
        return self._stamp is not None


def read_token_file(path: Path) -> list[str]:
    """Tokens in ``path``: one per line, blank lines and ``#`` comments skipped."""
    return [t.strip() for t in path.read_text().splitlines() if t.strip() and not t.strip().startswith("#")]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenSet:
    """Tokens from ``path`` (re-read when it changes) and ``env_var``; see the module docstring."""

    def __init__(self, path: str | Path | None = None, env_var: str | None = None, *, check_s: float = 1.0,
                 what: str = "auth_token_file") -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None and not self.path.is_file():
            raise InvalidInput(f"`{what}` {str(self.path)!r} does not exist")
        self.check_s = check_s
        env = os.environ.get(env_var, "") if env_var else ""
        self._env = [_digest(t.strip()) for t in env.split(",") if t.strip()]
        self._file: list[bytes] = []
        self._watch = FileWatch([self.path] if self.path is not None else [], check_s)
        self._mu = threading.Lock()
        self._reload(force=True)

    def __len__(self) -> int:
        return len(self._file) + len(self._env)

    def _reload(self, force: bool = False) -> None:
        """Re-read the file if its (inode, size, mtime) changed since the last read."""
        if self.path is None:
            return
        with self._mu:
            try:
                stamp = self._watch.poll(force)
                if stamp is None:
                    return
                tokens = read_token_file(self.path)
            except OSError as exc:
                log.warning("token file unreadable; keeping the last tokens read",
                            extra={"path": str(self.path), "error": exc.strerror or type(exc).__name__})
                return
            if not tokens and self._file:
                log.warning("token file is empty; keeping the last tokens read", extra={"path": str(self.path)})
                return
            if self._watch.accepted:
                log.info("token file changed; tokens reloaded", extra={"path": str(self.path), "tokens": len(tokens)})
            self._file = [_digest(t) for t in tokens]
            self._watch.accept(stamp)

    def matches(self, token: str | None) -> bool:
        """Whether ``token`` is in the set; compares against every digest (no early exit), so
        timing reveals neither a prefix nor which token matched."""
        self._reload()
        if token is None:
            return False
        given = _digest(token)
        ok = False
        for d in (*self._file, *self._env):
            ok |= hmac.compare_digest(given, d)
        return ok
