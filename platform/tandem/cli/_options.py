"""Option parsing shared by the CLI nouns."""

from __future__ import annotations

import json


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
