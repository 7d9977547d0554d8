"""Rules for the two sub-intents with a closed grammar: price constraints and sizes.

Prices
  * ``under|below|less than|cheaper than|up to|at most|no more than|max|within|<|<=`` + amount
    → ``max``; ``over|above|more than|at least|min|>|>=`` + amount → ``min``;
  * ``between A and B``, ``$A-$B``, ``A to B dollars`` → ``[A, B]``;
  * a bare ``$A`` (or ``A dollars``) means *about* A: ``[A·(1-ABOUT), A·(1+ABOUT)]``, ABOUT = 0.25;
  * a comparator amount followed by a unit (``under 6 ft``) is a size, not a price;
  * ``cheap``/``inexpensive``/``budget``/``affordable``/... is *relative*: at most the 33rd
    percentile of catalog prices for the query's product type (of all prices when the type has
    fewer than 10 priced items); with no prices in the catalog it sets no bound.

Sizes: a number (``3``, ``2.5``, ``1/2``, ``1-1/2``) and a unit (in, ft, gal, lb, oz, V, W,
A, BTU, mm, cm, qt, gauge, cu ft, sq ft ...), or ``2x4``-style dimensions. Each is rewritten
to the catalog's spelling (``1/2 inch`` → ``1/2 in.``) for the normalised sub-query.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tandem.intent.filters import IntentFilter

ABOUT = 0.25

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?(?!\d)(?!\.\d)"  # whole numbers only: no backtracking into "5" of "50"
_CUR = r"(?:dollars?|bucks|usd)"
_UNIT_WORDS = {
    "in": "in.", "inch": "in.", "inches": "in.", '"': "in.", "ft": "ft.", "feet": "ft.", "foot": "ft.",
    "'": "ft.", "gal": "gal.", "gallon": "gal.", "gallons": "gal.", "lb": "lb.", "lbs": "lb.", "pound": "lb.",
    "pounds": "lb.", "oz": "oz.", "ounce": "oz.", "ounces": "oz.", "qt": "qt.", "quart": "qt.", "quarts": "qt.",
    "mm": "mm", "cm": "cm", "v": "-Volt", "volt": "-Volt", "volts": "-Volt", "w": "-Watt", "watt": "-Watt",
    "watts": "-Watt", "amp": "Amp", "amps": "Amp", "btu": "BTU", "btus": "BTU", "gauge": "-Gauge",
    "ga": "-Gauge", "cu ft": "cu. ft.", "cu. ft": "cu. ft.", "cubic feet": "cu. ft.", "sq ft": "sq. ft.",
    "sq. ft": "sq. ft.", "square feet": "sq. ft.", "yd": "yd.", "yard": "yd.", "yards": "yd.", "psi": "psi",
    "hp": "HP", "mil": "mil", "piece": "-Piece", "pc": "-Piece", "light": "-Light", "tier": "-Tier",
}
_UNIT_ALT = "|".join(sorted((re.escape(u) for u in _UNIT_WORDS), key=len, reverse=True))
_QTY = r"\d+(?:\s*-\s*|\s+)\d+/\d+|\d+/\d+|\d+(?:\.\d+)?"
_SIZE = re.compile(rf"(?<![\w/.])(?P<num>{_QTY})\s*-?\s*(?P<unit>{_UNIT_ALT})\.?(?![a-z0-9])")
_DIMS = re.compile(r"(?<![\w/.])\d+(?:\.\d+)?(?:\s*(?:x|by)\s*\d+(?:\.\d+)?){1,2}(?![\w/])")
_UNIT_AFTER = rf"(?!\s*-?\s*(?:{_UNIT_ALT})\.?(?![a-z0-9]))"

_AMT = rf"(?:\$\s*)?{_NUM}(?:\s*{_CUR})?"
_MAX = re.compile(rf"(?:\b(?:under|below|less\s+than|cheaper\s+than|up\s+to|at\s+most|no\s+more\s+than|"
                  rf"max(?:imum)?|within)\b|<=?)\s*(?P<a>{_AMT}){_UNIT_AFTER}")
_MIN = re.compile(rf"(?:\b(?:over|above|more\s+than|at\s+least|min(?:imum)?)\b|>=?)\s*(?P<a>{_AMT}){_UNIT_AFTER}")
_RANGE = re.compile(rf"(?:\bbetween\s+)?(?P<a>\$\s*{_NUM}|{_NUM})\s*(?:-|to|and)\s*(?P<b>\$\s*{_NUM}(?:\s*{_CUR})?|"
                    rf"{_NUM}\s*{_CUR}|{_NUM}){_UNIT_AFTER}")
_BARE = re.compile(rf"\$\s*(?P<a>{_NUM})|(?<![\w.])(?P<b>{_NUM})\s*{_CUR}\b")
_CHEAP = re.compile(r"\b(?:cheap|cheapest|inexpensive|affordable|budget|bargain|low[- ]cost|discount)\b")


@dataclass(frozen=True, slots=True)
class PriceConstraint:
    """A price range from the query; ``relative`` when it came from a word like "cheap"."""

    min: float | None
    max: float | None
    start: int
    end: int
    relative: bool = False

    def filter(self) -> IntentFilter | None:
        """The typed filter for this range, or ``None`` when it sets no bound (``cheap`` in a
        catalog without prices). A bound too large for a float (a 400-digit amount) is open."""
        lo, hi = (b if b is not None and math.isfinite(b) else None for b in (self.min, self.max))
        return None if lo is None and hi is None else IntentFilter(min_price=lo, max_price=hi)


@dataclass(frozen=True, slots=True)
class SizeSpan:
    """A size or dimension and its catalog spelling."""

    start: int
    end: int
    canonical: str


def _amount(text: str) -> float:
    return float(re.sub(r"[^\d.]", "", text.replace(",", "")))


def _is_money(text: str) -> bool:
    return "$" in text or re.search(_CUR, text) is not None


def parse_price(query: str, cheap_max: float | None = None) -> PriceConstraint | None:
    """The price constraint in a normalised (lowercase) query, or ``None``.

    ``cheap_max`` is the bound a relative word ("cheap") maps to; ``None`` keeps the
    constraint (so the word leaves the text query) without a bound.
    """
    m = _RANGE.search(query)
    if m and (_is_money(m.group()) or m.group().startswith("between")):
        a, b = sorted((_amount(m.group("a")), _amount(m.group("b"))))
        return PriceConstraint(a, b, m.start(), m.end())
    m = _MAX.search(query)
    if m:
        return PriceConstraint(None, _amount(m.group("a")), m.start(), m.end())
    m = _MIN.search(query)
    if m:
        return PriceConstraint(_amount(m.group("a")), None, m.start(), m.end())
    m = _BARE.search(query)
    if m:
        x = _amount(m.group("a") or m.group("b"))
        return PriceConstraint(round(x * (1 - ABOUT), 2), round(x * (1 + ABOUT), 2), m.start(), m.end())
    m = _CHEAP.search(query)
    if m:
        return PriceConstraint(None, cheap_max, m.start(), m.end(), relative=True)
    return None


def _fraction(num: str) -> str:
    """``1 1/2`` and ``1 - 1/2`` → ``1-1/2`` (the catalog's spelling)."""
    return re.sub(r"\s*-\s*|\s+", "-", num.strip())


def find_sizes(query: str) -> list[SizeSpan]:
    """Sizes and dimensions in a normalised query, left to right, non-overlapping."""
    spans: list[SizeSpan] = []
    taken: list[tuple[int, int]] = []
    for m in _SIZE.finditer(query):
        unit = _UNIT_WORDS[m.group("unit")]
        sep = "" if unit.startswith("-") else " "
        spans.append(SizeSpan(m.start(), m.end(), f"{_fraction(m.group('num'))}{sep}{unit}"))
        taken.append((m.start(), m.end()))
    for m in _DIMS.finditer(query):
        if any(s < m.end() and m.start() < e for s, e in taken):
            continue
        nums = re.split(r"\s*(?:x|by)\s*", m.group())
        spans.append(SizeSpan(m.start(), m.end(), " x ".join(nums)))
    return sorted(spans, key=lambda s: s.start)
