"""Bearer-token sets that follow their files, and redaction of credentials in text.

A :class:`TokenSet` holds the SHA-256 digests of the tokens in one file (one per line, ``#``
comments) plus, optionally, comma-separated ones from an environment variable. It re-reads the
file when the file changes (inode, size or modification time — Kubernetes rotates a mounted
Secret by swapping a symlink, which changes all three), checked at most every ``check_s``,
so a rotated or revoked token takes effect without a restart. A file that becomes unreadable
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
from pathlib import Path

from tandem.cache.redact import redact
from tandem.errors import InvalidInput

__all__ = ["TokenSet", "read_token_file", "redact"]

log = logging.getLogger("tandem_services.auth")

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
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._mu = threading.Lock()
        self._reload(force=True)

    def __len__(self) -> int:
        return len(self._file) + len(self._env)

    def _reload(self, force: bool = False) -> None:
        """Re-read the file if its (inode, size, mtime) changed since the last read."""
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        with self._mu:
            self._next_check = now + self.check_s
            try:
                st = os.stat(self.path)
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                if stamp == self._stamp:
                    return
                tokens = read_token_file(self.path)
            except OSError as exc:
                log.warning("token file unreadable; keeping the last tokens read",
                            extra={"path": str(self.path), "error": exc.strerror or type(exc).__name__})
                return
            if not tokens and self._file:
                log.warning("token file is empty; keeping the last tokens read", extra={"path": str(self.path)})
                return
            if self._stamp is not None:
                log.info("token file changed; tokens reloaded", extra={"path": str(self.path), "tokens": len(tokens)})
            self._file, self._stamp = [_digest(t) for t in tokens], stamp

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
