""":class:`IntentFilter`: the typed constraint a ``filter`` intent carries (today a price range).

A decomposer reads constraints from the query ("under $50"); the searcher applies them after
retrieval (:func:`tandem.search.catalog.intent_filters`). They travel as this value — in process,
in the result cache (:meth:`IntentFilter.as_dict`) and on the wire (``tandem.v1.IntentFilter``) —
never as text to be parsed back. An intent's ``text`` is only a human-readable rendering
(:meth:`IntentFilter.text`).

Named ``IntentFilter`` rather than ``FilterSpec``: :class:`tandem.search.request.FilterSpec` is
the client's per-field request filter; this is one decomposer constraint over several fields.
New attributes (brand, category prefix) become further optional fields here, in
:meth:`~IntentFilter.as_dict`, in the proto message and in ``intent_filters``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tandem.errors import InvalidInput

#: The attributes an :class:`IntentFilter` may constrain, in display order.
FIELDS = ("min_price", "max_price")


@dataclass(frozen=True, slots=True)
class IntentFilter:
    """Constraints read from a query; ``None`` leaves an attribute unconstrained.

    ``min_price``/``max_price`` bound the item's price (inclusive). At least one attribute is
    set; a bound is a finite number >= 0 and ``min_price <= max_price``. Invalid values raise
    :class:`~tandem.errors.InvalidInput` naming the field (``filter.min_price``).
    """

    min_price: float | None = None
    max_price: float | None = None

    def __post_init__(self) -> None:
        for name in FIELDS:
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InvalidInput(f"`filter.{name}` must be a finite number >= 0, got {v!r}")
            if isinstance(v, int):  # one type on every path (JSON and proto give floats)
                object.__setattr__(self, name, float(v))
        if self.min_price is None and self.max_price is None:
            raise InvalidInput(f"`filter` constrains nothing; set at least one of {', '.join(f'`{f}`' for f in FIELDS)}")
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise InvalidInput(f"`filter.min_price` ({self.min_price:g}) is greater than "
                               f"`filter.max_price` ({self.max_price:g})")

    def text(self) -> str:
        """Human-readable form for display and logs (``price>=10 price<=50``); never parsed."""
        parts = []
        if self.min_price is not None:
            parts.append(f"price>={self.min_price:g}")
        if self.max_price is not None:
            parts.append(f"price<={self.max_price:g}")
        return " ".join(parts)

    def as_dict(self) -> dict[str, float]:
        """The set attributes by name (the result cache's JSON form)."""
        return {name: getattr(self, name) for name in FIELDS if getattr(self, name) is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IntentFilter:
        """Inverse of :meth:`as_dict`; unknown keys are :class:`InvalidInput` naming them."""
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise InvalidInput(f"`filter` has unknown fields {unknown}; known: {', '.join(FIELDS)}")
        return cls(**{name: d[name] for name in FIELDS if d.get(name) is not None})


__all__ = ["FIELDS", "IntentFilter"]
