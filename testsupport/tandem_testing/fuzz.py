"""Property-based fuzzing of everything that parses client or producer input.

Each target is a pair: a Hypothesis strategy that generates mostly-wrong input (arbitrary
unicode, NaN/inf, odd JSON shapes, junk rows) and a ``check_*`` property that runs the code
under test and returns an outcome label (``"ok"`` or the refusal kind). A property raises
:class:`FuzzFailure` when the code broke its contract: an exception other than the domain
error, a refusal that does not name the field, or an accepted input that violates an
invariant. ``tests/unit/test_fuzz_*.py`` run the properties with a few hundred examples;
``python -m bench.fuzz`` runs the same ones with 100,000+ cases and counts outcomes.

This module holds what the targets share: the failure type and the value strategies
(text, numbers, JSON, item bodies). The targets are in :mod:`tandem_testing.fuzz_requests`
(search requests, in process and over gRPC), :mod:`tandem_testing.fuzz_events` (item
events from Kafka records and event files), :mod:`tandem_testing.fuzz_loaders` (catalog
JSONL/CSV files) and :mod:`tandem_testing.fuzz_ingest` (the ingest consumer).
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import strategies as st


class FuzzFailure(AssertionError):
    """The code under test broke its contract for one generated input.

    ``kind`` is ``crash`` (an exception other than the domain error), ``internal`` (a gRPC
    status other than OK / INVALID_ARGUMENT) or ``contract`` (a wrong answer).
    """

    def __init__(self, message: str, kind: str = "contract") -> None:
        super().__init__(message)
        self.kind = kind


def _crash(target: str, exc: BaseException, value: Any) -> FuzzFailure:
    return FuzzFailure(f"{target}: {type(exc).__name__}: {str(exc)[:200]} for input {value!r:.300}", "crash")


# --------------------------------------------------------------------------- strategies

#: Text that protobuf can carry (no lone surrogates); ``full_text`` also has those.
proto_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
full_text = st.text(max_size=40)
blank_text = st.text(st.sampled_from(" \t\n\r\u00a0\u2003\u200b\u3000"), max_size=5)
"""Runs of ASCII and unicode spaces (blank once stripped)."""
edge_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**6), max_value=10**6).map(float),
    st.sampled_from([0.0, -0.0, 1e-300, 5e-324, 1e308, math.inf, -math.inf, math.nan]),
)
"""Floats at the edges: NaN, infinities, signed zero, subnormals, huge and plain values."""

_json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), full_text,
)
json_values = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(full_text, inner, max_size=4),
    max_leaves=12,
)
"""Arbitrary JSON-shaped Python values (what ``json.loads`` can return)."""

_item_id = st.one_of(st.sampled_from(["t01", " t01 ", "", "a\x00b", "x" * 129]), proto_text, st.integers(), json_values)
_simple_id = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
odd_versions = st.one_of(st.integers(-2, 3), st.booleans(), st.floats(allow_nan=True), full_text, st.none())
"""Event/item ``version`` values: small ints, booleans, NaN, text, ``None``."""


def item_bodies() -> st.SearchStrategy[Any]:
    """Item JSON objects: half well-typed items, half junk (wrong types, odd ids, extra fields)."""
    fields: dict[str, st.SearchStrategy[Any]] = {
        "item_id": _item_id,
        "title": st.one_of(st.just("Cordless Drill"), full_text, json_values),
        "description": full_text | json_values,
        "brand": full_text | st.none(),
        "category": st.one_of(full_text, st.lists(full_text, max_size=3), json_values),
        "attributes": st.dictionaries(full_text, full_text, max_size=3) | json_values,
        "price": st.one_of(edge_floats, full_text, st.none()),
        "version": odd_versions,
        "colour": full_text,
    }
    required = st.fixed_dictionaries({"item_id": fields["item_id"], "title": fields["title"]})
    optional = st.fixed_dictionaries({}, optional=fields)
    junk = st.one_of(st.builds(lambda a, b: {**b, **a}, required, optional), optional, json_values)
    # Half are well-typed items, so validation gets past the first field and accepts some.
    good = st.fixed_dictionaries(
        {"item_id": _simple_id, "title": st.text(min_size=1, max_size=20)},
        optional={"description": full_text, "brand": full_text, "category": st.lists(full_text, max_size=3),
                  "attributes": st.dictionaries(full_text, full_text, max_size=2),
                  "price": st.floats(0, 1e6) | edge_floats, "version": st.integers(0, 1)},
    )
    return st.one_of(good, junk)


def dump_json(value: Any) -> str:
    """``value`` as JSON text, non-ASCII kept and NaN/inf allowed (as a careless producer writes it)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=True)
