"""Redaction of URL credentials (``redis://user:password@host``) in text bound for errors and logs.

The result cache's Redis URL is the one secret-bearing URL a server is configured with (the
chart builds it from a Secret); its password must never reach a client's error message or a
log line, whatever code path formats the URL.
"""

from __future__ import annotations

import re

_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^\s/@:'\"]*)(?::[^\s/@'\"]*)?@")


def redact(text: str) -> str:
    """``text`` with every URL's userinfo reduced to its user name and ``***``
    (``redis://app:s3cret@host`` → ``redis://app:***@host``)."""
    if "@" not in text:
        return text
    return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text)
