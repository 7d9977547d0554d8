"""Pseudo-queries (seed chapter, section 5.3.1): template queries from item fields, and
model-generated queries from the id→query direction filtered by round-trip consistency.

Real queries cover a small share of a catalog (Home Depot: ~40k judged pairs for 55k
items), so most items are only ever seen through doc→id. Pseudo-queries give every item
query-shaped inputs for query→id alignment:

* :func:`template_queries` builds the short, head-noun-centred phrases shoppers type
  ("lawn mower", "toro lawn mower", "22 in lawn mower", "chrome trim kit") from the item's
  title, brand, category and attributes. Pure string work, deterministic by seed.
* :func:`generate_queries` samples queries from the trained model's ``<id2q>`` direction
  (the chapter's ``q = argmax p(q | d)``, with the item's semantic ID standing for ``d``),
  and :func:`round_trip_filter` keeps only those the model maps back to their own item
  (query→id constrained top-k contains it), which drops generated text that is too vague
  or names another product.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tandem.catalog.item import Item
from tandem.errors import InvalidInput

if TYPE_CHECKING:
    import torch

    from tandem.generative.tokenizer import TandemTokenizer
    from tandem.ids.trie import PrefixTrie

# Unit spellings of product titles; the trailing period of "in." / "ft." is dropped on output.
_UNITS = (r"(?:cu\.?\s*ft|sq\.?\s*ft|in|inch|inches|ft|feet|gal|gallon|qt|oz|lb|lbs|mm|cm|v|volt|w|watt|"
          r"amp|gauge|ga|piece|pc|pack|count|btu|psi|mah|ah|light|handle|tier|shelf|drawer|door)")
_NUM = r"\d+(?:[./]\d+)?(?:-\d+/\d+)?"
_DIM = re.compile(rf"(?<![\w.])({_NUM}(?:\s*|-)(?:{_UNITS})\.?)(?![a-z])", re.IGNORECASE)
_DIM_PAIR = re.compile(rf"({_NUM}\s*(?:in|ft)\.?\s*(?:[wdhl]\.?\s*)?x\s*{_NUM}\s*(?:in|ft)\.?)", re.IGNORECASE)
# Where a title's product phrase ends: "X with Y", "X for Y", "X in Chrome", "X - 96 in.", "X, Silver".
# "in" after a number is a unit ("12 in Yellow Hose"), not a colour clause.
_CLAUSE = re.compile(r"\s+(?:with|for|w/|featuring|includes)\s+|\s+-\s+|,|\(|(?<!\d)\s+in\s+(?=[a-z])",
                     re.IGNORECASE)
_COLOUR_CLAUSE = re.compile(r"(?<!\d)\s+in\s+([a-z][a-z ]{1,30}?)(?:\s+(?:with|for)\b|,|\(|$)", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9][a-z0-9#/.'-]*", re.IGNORECASE)
_STOP = {"and", "or", "the", "a", "an", "of", "to", "with", "for", "in", "on", "by", "&", "x"}


def _norm(text: str) -> str:
    """Query form: lower case, unit periods and punctuation dropped, spaces folded."""
    text = text.lower().replace("&", " and ")
    text = re.sub(r"(?<=[a-z])\.(?=\s|$)", "", text)  # "in." → "in", keeps "1.5"
    text = re.sub(r"[()\[\],;:!?\"]", " ", text)
    return " ".join(text.split())


def _words(phrase: str) -> list[str]:
    return [w.strip(".-'") for w in _WORD.findall(phrase) if w.strip(".-'")]


def _stem(word: str) -> str:
    """Crude plural folding, enough to see that "drill" repeats the type "drills"."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _has_digit(word: str) -> bool:
    return any(ch.isdigit() for ch in word)


def product_phrase(title: str) -> str:
    """The title's product phrase: everything before the first "with / for / in <colour> / - / , / (".

    "Toro Recycler 22 in. Variable Speed Gas Lawn Mower with Briggs Engine" → "Toro Recycler
    22 in. Variable Speed Gas Lawn Mower". A unit "in." (after a number) is not a clause
    start: the lookahead wants a letter after "in ", and "22 in. Variable" has a period.
    """
    match = _CLAUSE.search(title)
    head = title[: match.start()] if match else title
    return head.strip() or title.strip()


def product_type(item: Item) -> list[str]:
    """Product-type phrases, most specific last: the head noun and, when clean, head + modifier.

    The category leaf wins when the item has one (curated); otherwise the last words of the
    title's product phrase, skipping sizes and model numbers ("12-Gauge Angle" → "angle").
    """
    if item.category:
        leaf = _norm(item.category[-1])
        if leaf:
            return [leaf]
    words = _words(product_phrase(item.title))
    while words and (_has_digit(words[-1]) or words[-1].lower() in _STOP):
        words.pop()
    if not words:
        return []
    out = [words[-1].lower()]
    if len(words) >= 2 and not _has_digit(words[-2]) and words[-2].lower() not in _STOP:
        out.append(f"{words[-2]} {words[-1]}".lower())
    return out


def _brand(item: Item, type_words: set[str]) -> str | None:
    if item.brand:
        return _norm(item.brand)
    # Home Depot titles carry no brand field but start with the brand ("BEHR Premium ...").
    first = _words(item.title)[:1]
    if first and first[0].isalpha() and first[0].lower() not in type_words and first[0].lower() not in _STOP:
        return first[0].lower()
    return None


def template_queries(item: Item, max_count: int, seed: int = 0) -> list[str]:
    """Up to ``max_count`` distinct template queries for ``item``, deterministic by ``seed``.

    Candidates, in order: product type (head noun), brand + type, attribute phrases
    (attribute values, the "in <colour>" clause and title modifiers, each + type),
    dimension phrases ("22 in lawn mower", "36 in x 36 in sheet"), prefixes of the title's
    product phrase and the title without its brand. The type and brand + type always come
    first (they are what most shoppers type); when more candidates exist than
    ``max_count``, the rest are drawn by a generator seeded with ``seed`` and the item ID,
    keeping their order. No candidate repeats the full title (doc→id already has it).
    """
    if max_count < 0:
        raise InvalidInput(f"`max_count` must be >= 0, got {max_count}")
    if max_count == 0:
        return []
    types = product_type(item)
    typ = types[-1] if types else ""
    type_words = set(" ".join(types).split())
    type_stems = {_stem(w) for w in type_words}
    brand = _brand(item, type_words)
    phrase = product_phrase(item.title)

    def with_type(words: str) -> str:
        words = _norm(words)
        if not typ or not words:
            return words
        return words if typ in words else f"{words} {typ}"

    first: list[str] = list(reversed(types))  # most specific type first
    if brand and typ:
        first.append(f"{brand} {typ}")
    rest: list[str] = []
    for value in item.attributes.values():
        if value and len(value) <= 40:
            rest.append(with_type(value))
    colour = _COLOUR_CLAUSE.search(item.title)
    if colour:
        rest.append(with_type(colour.group(1)))
    title_words = [w.lower() for w in _words(phrase)]
    for w in title_words:
        if _stem(w) not in type_stems and w != brand and w not in _STOP and not _has_digit(w) and len(w) > 2:
            rest.append(with_type(w))
    for m in _DIM_PAIR.finditer(item.title):
        rest.append(with_type(m.group(1)))
    for m in _DIM.finditer(item.title):
        rest.append(with_type(m.group(1).replace("-", " ")))
    for n in (2, 3, 4):
        if len(title_words) > n:
            rest.append(" ".join(title_words[:n]))
    if brand and title_words and title_words[0] == brand and len(title_words) > 2:
        rest.append(" ".join(title_words[1:]))

    full = _norm(item.title)
    seen: set[str] = set()
    ordered: list[list[str]] = [[], []]
    for group, cands in enumerate((first, rest)):
        for q in cands:
            q = _norm(q)
            if q and q != full and q not in seen:
                seen.add(q)
                ordered[group].append(q)
    head, tail = ordered
    if len(head) >= max_count:
        return head[:max_count]
    room = max_count - len(head)
    if len(tail) > room:
        rng = np.random.default_rng([seed, zlib.crc32(item.item_id.encode())])
        keep = np.sort(rng.choice(len(tail), size=room, replace=False))
        tail = [tail[i] for i in keep]
    return head + tail


def catalog_template_pairs(items: Sequence[Item], per_item: int, seed: int = 0) -> list[tuple[str, str]]:
    """``(query, item_id)`` pairs: :func:`template_queries` for every item."""
    return [(q, it.item_id) for it in items for q in template_queries(it, per_item, seed)]


def generate_queries(
    model: torch.nn.Module,
    tokenizer: TandemTokenizer,
    codes: np.ndarray,
    per_item: int,
    *,
    max_length: int = 16,
    seed: int = 0,
    batch_size: int = 64,
    top_k: int = 20,
) -> list[list[str]]:
    """``per_item`` distinct sampled queries per row of ``codes`` from the ``<id2q>`` direction.

    Top-k sampling rather than beam search: beams of a small model collapse onto one
    phrasing per item, and diversity is the point of a second round. Duplicates and empty
    strings are dropped, so an item can get fewer than ``per_item``. Deterministic by
    ``seed`` on a given device.
    """
    import torch

    if per_item < 1:
        raise InvalidInput(f"`per_item` must be >= 1, got {per_item}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[list[str]] = []
    gen = torch.Generator(device="cpu").manual_seed(seed)
    try:
        for start in range(0, len(codes), batch_size):
            rows = codes[start : start + batch_size]
            src = [[tokenizer.task_ids["id2q"], *tokenizer.encode_id(r), tokenizer.eos_id] for r in rows.tolist()]
            input_ids = torch.tensor(src, dtype=torch.long, device=device)
            # generate() draws from the global RNG; seed it from our own stream per batch.
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            with torch.inference_mode():
                seqs = model.generate(  # type: ignore[operator]
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True, top_k=top_k,
                    num_return_sequences=per_item, max_new_tokens=max_length,
                    bad_words_ids=[[int(t)] for t in tokenizer.id_table[tokenizer.id_table >= 0]],
                    pad_token_id=tokenizer.pad_id, eos_token_id=tokenizer.eos_id,
                    decoder_start_token_id=tokenizer.pad_id,
                )
            texts = tokenizer.hf.batch_decode(seqs, skip_special_tokens=True)  # type: ignore[attr-defined]
            for i in range(len(rows)):
                seen: list[str] = []
                for t in texts[i * per_item : (i + 1) * per_item]:
                    t = " ".join(t.split())
                    if t and t not in seen:
                        seen.append(t)
                out.append(seen)
    finally:
        model.train(was_training)
    return out


def round_trip_filter(
    model: torch.nn.Module,
    tokenizer: TandemTokenizer,
    trie: PrefixTrie,
    pairs: Sequence[tuple[str, int]],
    top_k: int,
    *,
    max_input_length: int = 32,
    batch_size: int = 64,
) -> list[bool]:
    """For each ``(query, item index)``: does query→id constrained top-``top_k`` contain the item?

    ``trie`` must hold the items' ID token sequences with leaf value = item index (build it
    with ``PrefixTrie.from_sequences`` over the items in index order).
    """
    import torch

    from tandem.generative.decoding import constrained_beam_search

    if top_k < 1:
        raise InvalidInput(f"`top_k` must be >= 1, got {top_k}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    keep: list[bool] = []
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            ids = tokenizer.encode_texts([q for q, _ in chunk], max_input_length - 1)
            rows = [[tokenizer.task_ids["q2id"], *r] for r in ids]
            width = max(len(r) for r in rows)
            input_ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
            for i, r in enumerate(rows):
                input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask = (input_ids != tokenizer.pad_id).long()
            decoded = constrained_beam_search(model, (input_ids.to(device), mask.to(device)), trie,
                                              num_beams=top_k, normalize="level")
            keep.extend(any(d.leaf == item for d in row) for row, (_, item) in zip(decoded, chunk, strict=True))
    finally:
        model.train(was_training)
    return keep


def id2q_round(
    model: torch.nn.Module,
    tokenizer: TandemTokenizer,
    codes: np.ndarray,
    id_tokens: np.ndarray,
    known: set[str],
    *,
    per_item: int,
    top_k: int,
    max_query_length: int,
    max_input_length: int,
    seed: int,
) -> tuple[list[tuple[str, int]], dict[str, float]]:
    """The second pseudo-query round: sample ``per_item`` queries per item from ``<id2q>``,
    drop texts already in ``known`` (training texts), keep those whose query→id top-``top_k``
    contains their item. ``id_tokens[i]`` is item ``i``'s ID token sequence (no EOS).

    Returns the kept ``(query, item index)`` pairs and counts (sampled, new, kept, seconds).
    """
    import time

    from tandem.ids.trie import PrefixTrie

    t0 = time.perf_counter()
    generated = generate_queries(model, tokenizer, codes, per_item, max_length=max_query_length, seed=seed)
    cands = [(q, i) for i, qs in enumerate(generated) for q in qs if q not in known]
    trie = PrefixTrie.from_sequences(id_tokens)
    keep = round_trip_filter(model, tokenizer, trie, cands, top_k, max_input_length=max_input_length) if cands else []
    kept = [c for c, k in zip(cands, keep, strict=True) if k]
    stats = {"sampled": sum(len(g) for g in generated), "new": len(cands), "kept": len(kept),
             "seconds": round(time.perf_counter() - t0, 1)}
    return kept, stats
