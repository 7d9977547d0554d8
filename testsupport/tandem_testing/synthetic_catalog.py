"""A deterministic synthetic hardware catalog with queries and judgements, for the ``ci`` profile.

Written for Tandem (no external data). Items are combinations of brand, product type,
material, colour and size; every item gets a handful of queries built from different
subsets of its attributes, split into train and dev queries that never share their text,
so dev measures whether query→id generalises to unseen phrasings of known items rather
than whether training queries were memorised. Other items that happen to match a query
are unjudged, as in real qrels, which keeps absolute figures conservative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tandem.catalog.item import Item

_BRANDS = ["Volta", "Brackett", "Sawtooth", "Huehouse", "Lumo", "Greenreel", "Aquafin", "Stickwell",
           "Ironbark", "Tidewell", "Korvan", "Maplecrest"]
_TYPES = [
    ("drill", "Tools"), ("hammer", "Tools"), ("saw", "Tools"), ("wrench", "Tools"), ("screwdriver", "Tools"),
    ("faucet", "Plumbing"), ("pipe", "Plumbing"), ("valve", "Plumbing"), ("shower head", "Plumbing"),
    ("lamp", "Lighting"), ("bulb", "Lighting"), ("ceiling fan", "Lighting"), ("paint", "Paint"),
    ("brush", "Paint"), ("roller", "Paint"), ("hose", "Garden"), ("rake", "Garden"), ("shovel", "Garden"),
    ("planter", "Garden"), ("door knob", "Hardware"), ("hinge", "Hardware"), ("cabinet", "Storage"),
    ("shelf", "Storage"), ("ladder", "Tools"),
]
_MATERIALS = ["steel", "brass", "oak", "plastic", "aluminum", "copper", "bamboo", "ceramic"]
_COLOURS = ["red", "black", "white", "green", "blue", "gray", "bronze", "yellow"]
_SIZES = ["small", "large", "compact", "heavy duty", "12 in", "24 in", "3 ft", "6 ft"]
_SYNONYMS = {"large": "big", "small": "mini", "gray": "grey", "heavy duty": "industrial", "compact": "mini"}


@dataclass(frozen=True)
class SyntheticSet:
    """The catalog and its train/dev queries (qid → text) and qrels (qid → item → grade)."""

    items: list[Item]
    train_queries: dict[str, str]
    train_qrels: dict[str, dict[str, int]]
    dev_queries: dict[str, str]
    dev_qrels: dict[str, dict[str, int]]


def synthetic_catalog(n_items: int = 300, seed: int = 7, train_per_item: int = 3) -> SyntheticSet:
    """``n_items`` distinct items, ``train_per_item`` train queries and one dev query each."""
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, int, int, int, int]] = set()
    items: list[Item] = []
    attrs: list[dict[str, str]] = []
    while len(items) < n_items:
        key = (int(rng.integers(len(_BRANDS))), int(rng.integers(len(_TYPES))), int(rng.integers(len(_MATERIALS))),
               int(rng.integers(len(_COLOURS))), int(rng.integers(len(_SIZES))))
        if key in seen:
            continue
        seen.add(key)
        b, t, m, c, s = key
        a = {"brand": _BRANDS[b], "type": _TYPES[t][0], "material": _MATERIALS[m], "colour": _COLOURS[c],
             "size": _SIZES[s]}
        title = f"{a['brand']} {a['size']} {a['colour']} {a['material']} {a['type']}"
        items.append(Item(item_id=f"syn{len(items):05d}", title=title.title(), brand=a["brand"],
                          category=[_TYPES[t][1], a["type"].title()], attributes={"material": a["material"]}))
        attrs.append(a)
    train_q: dict[str, str] = {}
    train_r: dict[str, dict[str, int]] = {}
    dev_q: dict[str, str] = {}
    dev_r: dict[str, dict[str, int]] = {}
    fields = ["brand", "material", "colour", "size"]
    if not 1 <= train_per_item <= len(fields) - 1:
        raise ValueError(f"`train_per_item` must be in 1..{len(fields) - 1}, got {train_per_item}")
    for item, a in zip(items, attrs, strict=True):
        # Every query names the product type plus three of the four other attributes. The
        # four 3-subsets differ, so dev (its own subset, synonyms half the time) never
        # repeats a train query's words.
        dropped = rng.permutation(len(fields))
        for k, drop in enumerate(dropped[: train_per_item + 1]):
            words = [a[f] for j, f in enumerate(fields) if j != drop] + [a["type"]]
            is_dev = k == train_per_item
            if is_dev:
                words = [_SYNONYMS.get(w, w) if rng.random() < 0.5 else w for w in words]
            text = " ".join(words[i] for i in rng.permutation(len(words)))
            if is_dev:
                qid = f"{item.item_id}-d"
                dev_q[qid], dev_r[qid] = text, {item.item_id: 6}
            else:
                qid = f"{item.item_id}-t{k}"
                train_q[qid], train_r[qid] = text, {item.item_id: 6}
    return SyntheticSet(items, train_q, train_r, dev_q, dev_r)
