"""Mapping between catalog items and the Anserini JSON documents the index stores.

**Term-frequency caps.** BM25's term-frequency factor rewards an item that repeats a query
term, which is what keyword stuffing exploits. ``term_cap`` bounds how often any one term
may occur *per field* in the text that reaches Lucene: occurrences past the cap are dropped
before indexing (the stored catalog item is unchanged). Matching is on lower-cased
alphanumeric tokens with a trailing plural ``s`` folded (``drill``/``drills``), close enough
to the Porter-stemmed analyzer that a stuffer cannot escape the cap by inflecting. Only
terms with three or more characters that are not all digits are capped: real titles
legitimately repeat sizes and units ("24 in. x 1/2 in. x 12 in."), and those short tokens
are not what stuffing targets. Other characters (punctuation, spacing) are kept.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from tandem.catalog.item import Item
from tandem.errors import InvalidInput

_WORD = re.compile(r"[0-9A-Za-z]+")


def _term_key(word: str) -> str:
    w = word.lower()
    return w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w


def cap_terms(text: str, cap: int) -> str:
    """``text`` with every term's occurrences after the ``cap``-th removed (case-insensitive)."""
    if cap < 1:
        raise InvalidInput(f"`term_cap` must be >= 1, got {cap}")
    seen: Counter[str] = Counter()
    out: list[str] = []
    pos = 0
    dropped = False
    for m in _WORD.finditer(text):
        key = _term_key(m.group())
        seen[key] += 1
        if seen[key] > cap and len(key) >= 3 and not key.isdigit():
            out.append(text[pos:m.start()].rstrip() if not dropped else "")
            pos = m.end()
            dropped = True
            continue
        if dropped:
            gap = text[pos:m.start()]
            out.append(gap if gap.strip() else " ")
            dropped = False
        else:
            out.append(text[pos:m.start()])
        out.append(m.group())
        pos = m.end()
    out.append(text[pos:] if not dropped else text[pos:].lstrip())
    return "".join(out).strip()


def cap_item(item: Item, cap: int | None) -> Item:
    """A copy of ``item`` whose title, description and attribute values are capped at ``cap``.

    Used where the index is fed items rather than documents (the live applier); ``None``
    returns ``item`` itself. A title capped to nothing keeps its first word (titles are
    required).
    """
    if cap is None:
        return item
    title = cap_terms(item.title, cap) or item.title.split()[0]
    update: dict[str, Any] = {"title": title}
    if item.description:
        update["description"] = cap_terms(item.description, cap) or None
    if item.attributes:
        update["attributes"] = {k: cap_terms(v, cap) for k, v in item.attributes.items()}
    return item.model_copy(update=update)


def to_document(item: Item, *, term_cap: int | None = None) -> dict[str, Any]:
    """Anserini ``JsonCollection`` document for ``item``.

    ``contents`` is all of the item's text (the default search field); each item field is a
    separate Lucene field for boosted multi-field search. ``version`` and ``price`` travel
    in the stored raw JSON only (they are not among the indexed fields). ``term_cap``: see
    the module docstring (applied per field, so ``contents`` holds the capped fields).
    """
    item = cap_item(item, term_cap)
    doc: dict[str, Any] = {"id": item.item_id, "contents": item.text(), "title": item.title}
    if item.brand:
        doc["brand"] = item.brand
    if item.category:
        doc["category"] = " > ".join(item.category)
    if item.attributes:
        doc["attributes"] = "; ".join(f"{k}: {v}" for k, v in item.attributes.items())
    if item.description:
        doc["description"] = item.description
    if item.price is not None:
        doc["price"] = str(item.price)
    doc["version"] = str(item.version)
    return doc


def to_json_line(item: Item, *, term_cap: int | None = None) -> str:
    """:func:`to_document` serialised as one JSON line."""
    return json.dumps(to_document(item, term_cap=term_cap), ensure_ascii=False)
