"""Option parsing shared by the CLI nouns."""

from __future__ import annotations

import json
from pathlib import Path


def key_values(pairs: list[str], option: str) -> dict[str, object]:
    """Repeated ``KEY=VALUE`` options as a dict; VALUE is parsed as JSON when it is JSON.

    ``option`` names the flag in the error (``--set``, ``--param``).
    """
    from tandem.errors import InvalidInput

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"`{option}` expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


#: What to do when no server answers at ``--server``.
NO_SERVER_HINT = ("no server answers there; start one with `tandem serve --all-in-one --port PORT` "
                  "(it serves <home>/indexes/bm25 unless given --index), or check --server")


def default_index() -> Path:
    """The BM25 index every command uses when ``--index`` is not given: ``<home>/indexes/bm25``
    (what ``tandem index build`` writes and ``tandem stream consume`` updates)."""
    from tandem.config import get_settings

    return get_settings().home / "indexes" / "bm25"


def server_address(value: str, option: str = "--server") -> str:
    """``value`` as a gRPC target, checked: ``HOST:PORT`` with a port in 1..65535.

    A bare host would make gRPC dial port 443 and fail far from the mistake. ``unix:`` and
    ``dns:`` targets pass unchanged. ``option`` names the flag in the error.
    """
    from tandem.errors import InvalidInput

    if value.startswith(("unix:", "dns:")):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or (host.endswith(":") and not host.startswith("[")):
        raise InvalidInput(f"`{option}` expects HOST:PORT (e.g. 127.0.0.1:50051), got {value!r}: no port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"`{option}` expects HOST:PORT with a port in 1..65535, got {value!r}")
    return value
