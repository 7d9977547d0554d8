"""A deterministic synthetic catalog for stream tests and the freshness benchmark, and the
fresh-item split of BENCHMARK.md.

Each synthetic item carries a unique model code (e.g. ``QX4821``) in its title, so "is item
X searchable yet?" is one BM25 query whose top hit must be X.
"""

from __future__ import annotations

import random

from tandem.catalog.item import Item

_KINDS = ["Drill", "Saw", "Hammer", "Wrench", "Ladder", "Hose", "Faucet", "Lamp", "Fan", "Heater",
          "Sander", "Router", "Level", "Clamp", "Shovel", "Rake", "Mower", "Trimmer", "Grill", "Vacuum"]  # fmt: skip
_ADJ = ["Cordless", "Heavy Duty", "Compact", "Stainless", "Outdoor", "Adjustable", "Brushless",
        "Folding", "Electric", "Portable", "Industrial", "Premium"]  # fmt: skip
_BRANDS = ["Volta", "Brackett", "Sawtooth", "Greenway", "Plumb", "Ironside", "Northfield", "Kestrel"]
_CATS = [["Tools", "Power Tools"], ["Tools", "Hand Tools"], ["Outdoors", "Garden"], ["Home", "Lighting"],
         ["Home", "Heating & Cooling"], ["Outdoors", "Cooking"]]  # fmt: skip


def model_code(n: int) -> str:
    """A unique, search-friendly model code for item number ``n`` (letters + digits, one token)."""
    letters = "".join(chr(ord("a") + (n * 7 + i * 11) % 26) for i in range(2)).upper()
    return f"{letters}{n:05d}"


def synthetic_items(n: int, *, seed: int = 13, start: int = 0, version: int = 1) -> list[Item]:
    """``n`` items ``syn-<start>`` … with realistic product text and a unique model code each."""
    rng = random.Random(seed * 1_000_003 + start)
    out = []
    for i in range(start, start + n):
        kind, adj = rng.choice(_KINDS), rng.choice(_ADJ)
        code = model_code(i)
        out.append(
            Item(
                item_id=f"syn-{i}",
                title=f"{adj} {kind} {code}",
                brand=rng.choice(_BRANDS),
                category=[*rng.choice(_CATS), kind + "s"],
                attributes={"model": code, "size": f"{rng.randint(1, 60)} in."},
                description=f"{adj} {kind.lower()} for everyday projects, model {code}.",
                price=round(rng.uniform(5, 500), 2),
                version=version,
            )
        )
    return out
