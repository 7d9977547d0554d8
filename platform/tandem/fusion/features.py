"""Features of a candidate item for learned fusion, computed from the ranked lists alone (plus
titles when available), so the same code serves training and the query path.

Per *slot* — a ``(source, intent kind)`` pair such as ``(bm25, query)`` or
``(generative, brand)`` — three features: reciprocal rank, min-max normalised score and
presence. Then agreement (lists and sources returning the item), the RRF score and the best
reciprocal rank; with titles, the share of query words in the title, the best share of any
sub-intent's words in the title (sub-intent match), whether the product-type sub-query is
fully in the title, the title length, and four looser matches that survive the misspellings
and word forms of real queries ("gcfi" for GFCI, "sprinkler" vs "sprinklers"): the share of
the query's character trigrams found at word positions of the title, of its 4-letter word
prefixes starting a title word, of its adjacent word pairs adjacent in the title, and whether
its last word (usually the product noun) is a title word. With item scores (``score_names``, e.g. the
generative model's log-probability of the item's ID and the encoder's cosine, given for
*every* candidate by :meth:`~tandem.retriever.Retriever.score_items`): per score its value and
its gap to the best candidate of the query, and one flag saying whether the item was scored
(a missing score is 0 with the flag 0, never a failed search).

The matrix is built column block by column block with NumPy over all candidates (one array
operation per list, not per candidate: this runs on every search, ~200 candidates). Values
are computed in float64 and stored as float32 once. Adding features: name them in
:func:`feature_names` and fill their columns in :meth:`FeatureBuilder.candidates` (each block
writes ``X[:, start:stop]``; :attr:`FeatureBuilder.column` finds a block's first column).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tandem.fusion.base import Evidence, ItemScores, RankedList
from tandem.fusion.normalized import normalize_scores

Slot = tuple[str, str]
_WORD = re.compile(r"[a-z0-9]+")
AGGREGATES = ("n_lists", "n_sources", "rrf", "best_rr")
#: Title columns; a model stores the ones it was fitted with (older models lack the last four,
#: and :class:`FeatureBuilder` computes only what its ``title_features`` name).
EXACT_TITLE = ("q_in_title", "sub_in_title", "type_in_title", "title_len")
TITLE_FEATURES = (*EXACT_TITLE, "q_trigram", "q_prefix", "q_bigram", "q_last_in_title")
#: Rank stored for a source that did not return an item (larger than any real rank).
ABSENT = np.iinfo(np.int64).max
#: Titles kept per builder between searches (their stems); cleared when full.
TITLE_CACHE = 200_000


def _words(text: str) -> list[str]:
    """Lower-cased words with a plural ``s`` stripped, in order."""
    return [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in _WORD.findall(text.lower())]


def _stems(text: str) -> set[str]:
    return set(_words(text))


def feature_names(slots: Sequence[Slot], with_titles: bool, score_names: Sequence[str] = (),
                  title_features: Sequence[str] = TITLE_FEATURES) -> list[str]:
    """Column names, in order (stored with the model so a mismatch is detected)."""
    names = [f"{s}__{k}__{f}" for s, k in slots for f in ("rr", "norm", "present")]
    names += list(AGGREGATES) + ([f for f in TITLE_FEATURES if f in title_features] if with_titles else [])
    if score_names:
        names += [f"score__{n}__{f}" for n in score_names for f in ("value", "gap")] + ["score__present"]
    return names


@dataclass(frozen=True)
class Candidates:
    """One query's candidates: ids (first-seen order), features ``X`` ``[n, features]`` (float32)
    and, per source of the lists, each candidate's best rank (:data:`ABSENT` if none) and the
    source's score at that rank: the provenance of fused hits."""

    ids: list[str]
    X: np.ndarray
    sources: list[str]
    ranks: np.ndarray
    scores: np.ndarray

    def best_rank(self) -> np.ndarray:
        """Each candidate's best rank in any list ``[n]``."""
        return self.ranks.min(1) if self.sources else np.zeros(len(self.ids), np.int64)

    def provenance(self, picked: Sequence[int]) -> list[tuple[Evidence, ...]]:
        """The evidence of candidates ``picked``: per candidate one per source that returned
        it, best rank first (then source name)."""
        by_name = sorted(range(len(self.sources)), key=self.sources.__getitem__)
        ranks = self.ranks[picked][:, by_name]
        order = np.argsort(ranks, axis=1, kind="stable")  # stable: equal ranks stay in name order
        names = np.array(self.sources, dtype=object)[by_name][order].tolist()
        scores = np.take_along_axis(self.scores[picked][:, by_name], order, 1).tolist()
        counts = (ranks != ABSENT).sum(1).tolist()
        ranks = np.take_along_axis(ranks, order, 1).tolist()
        return [tuple(map(Evidence, n[:c], r[:c], sc[:c])) for n, r, sc, c in zip(names, ranks, scores, counts, strict=True)]


class FeatureBuilder:
    """Builds the candidate × feature matrix for one query's ranked lists."""

    def __init__(self, slots: Sequence[Slot], titles: Callable[[Sequence[str]], Mapping[str, str]] | None = None,
                 rrf_k: float = 60.0, score_names: Sequence[str] = (),
                 title_features: Sequence[str] = TITLE_FEATURES) -> None:
        self.slots: list[tuple[str, str]] = [(str(s[0]), str(s[1])) for s in slots]
        self.score_names = tuple(score_names)
        self._index = {s: i for i, s in enumerate(self.slots)}
        self.titles = titles
        self.rrf_k = rrf_k
        self._title_cache: dict[str, tuple[set[str], int, str]] = {}
        self.names = feature_names(self.slots, titles is not None, self.score_names, title_features)
        #: First column of each named feature (blocks fill ``X[:, column[first name]:...]``).
        self.column = {n: j for j, n in enumerate(self.names)}

    def _title_stems(self, item_ids: Sequence[str]) -> list[tuple[set[str], int, str]]:
        """Each item's title stems, word count and stems joined by spaces with a space at both
        ends (what the loose matches search in), from the cache or the ``titles`` lookup (read
        into a local dict first: another search may clear the cache meanwhile)."""
        cache = self._title_cache
        got = {i: cache.get(i) for i in item_ids}
        missing = [i for i, v in got.items() if v is None]
        if missing:
            assert self.titles is not None
            found = self.titles(missing)
            if len(cache) + len(missing) > TITLE_CACHE:  # bound memory on a long-running server
                cache.clear()
            for i in missing:
                t = found.get(i, "")
                words = _words(t)
                got[i] = cache[i] = (set(words), len(t.split()), f" {' '.join(words)} ")
        return [got[i] for i in item_ids]  # type: ignore[misc]

    def build(self, lists: Sequence[RankedList], item_scores: ItemScores | None = None) -> tuple[list[str], np.ndarray]:
        """Candidate ids (first-seen order) and their feature matrix (``float32``)."""
        c = self.candidates(lists, item_scores)
        return c.ids, c.X

    def candidates(self, lists: Sequence[RankedList], item_scores: ItemScores | None = None) -> Candidates:
        """:meth:`build` plus each candidate's best rank and score per source (for provenance)."""
        ids = list(dict.fromkeys(h.item_id for rl in lists for h in rl.hits))
        sources = list(dict.fromkeys(rl.source for rl in lists))
        n = len(ids)
        X = np.zeros((n, len(self.names)), np.float64)
        ranks = np.full((n, len(sources)), ABSENT, np.int64)
        scores = np.zeros((n, len(sources)), np.float64)
        if n:
            self._fill_lists(lists, ids, sources, X, ranks, scores)
            if self.titles is not None:
                self._fill_titles(lists, ids, X)
            if self.score_names:
                self._fill_scores(ids, item_scores or {}, X)
        return Candidates(ids, X.astype(np.float32), sources, ranks, scores)

    def _fill_lists(self, lists: Sequence[RankedList], ids: Sequence[str], sources: Sequence[str], X: np.ndarray,
                    ranks: np.ndarray, scores: np.ndarray) -> None:
        """Slot columns, aggregates, and the per-source best ranks/scores; one array step per list."""
        pos = {i: j for j, i in enumerate(ids)}
        src = {s: j for j, s in enumerate(sources)}
        base = 3 * len(self.slots)
        for rl in lists:
            if not rl.hits:
                continue
            hit_rows = np.fromiter((pos[h.item_id] for h in rl.hits), np.int64, len(rl.hits))
            rows, first = np.unique(hit_rows, return_index=True)  # an item counts once per list: its best rank
            rank = first + 1
            rr = 1.0 / rank
            raw = [h.score for h in rl.hits]
            norm = np.asarray(normalize_scores(raw, "minmax"), np.float64)[first]
            X[rows, base] += 1
            X[rows, base + 2] += rl.intent_weight / (self.rrf_k + rank)
            X[rows, base + 3] = np.fmax(X[rows, base + 3], rr)
            s = self._index.get((rl.source, rl.intent_kind))
            if s is not None:
                c = 3 * s
                X[rows, c] = np.fmax(X[rows, c], rr)
                X[rows, c + 1] = np.fmax(X[rows, c + 1], norm)
                X[rows, c + 2] = 1.0
            k = src[rl.source]
            better = rank < ranks[rows, k]
            ranks[rows[better], k] = rank[better]
            scores[rows[better], k] = np.asarray(raw, np.float64)[first][better]
        X[:, base + 1] = (ranks != ABSENT).sum(1)

    def _fill_titles(self, lists: Sequence[RankedList], ids: Sequence[str], X: np.ndarray) -> None:
        """Title columns (module docstring): exact and loose matches of the query, sub-intents
        and product type in each candidate's title, and its length."""
        words = _words(next((rl.intent for rl in lists if rl.intent_kind == "query"), lists[0].intent))
        q = set(words)
        subs = [sb for sb in (_stems(rl.intent) for rl in lists if rl.intent_kind not in ("query", "normalized")) if sb]
        typ = next((_stems(rl.intent) for rl in lists if rl.intent_kind == "product_type"), set())
        got = self._title_stems(ids)
        n, col = len(ids), self.column

        def share(words: set[str]) -> np.ndarray:
            return np.fromiter((len(words & st) for st, _, _ in got), np.float64, n) / len(words)

        def found(needles: Sequence[str]) -> np.ndarray:  # share of needles in each padded title
            return np.fromiter((sum(x in padded for x in needles) for _, _, padded in got), np.float64,
                               n) / len(needles)

        if q and "q_in_title" in col:
            X[:, col["q_in_title"]] = share(q)
        if subs and "sub_in_title" in col:
            X[:, col["sub_in_title"]] = np.max([share(sb) for sb in subs], axis=0)
        if typ and "type_in_title" in col:
            X[:, col["type_in_title"]] = np.fromiter((typ <= st for st, _, _ in got), np.float64, n)
        if "title_len" in col:
            X[:, col["title_len"]] = np.fromiter((length for _, length, _ in got), np.float64, n)
        if not words or "q_trigram" not in col:
            return
        trigrams = sorted({f" {w} "[i:i + 3] for w in words for i in range(len(w))})
        X[:, col["q_trigram"]] = found(trigrams)
        if prefixes := sorted({" " + w[:4] for w in words if len(w) >= 4}):
            X[:, col["q_prefix"]] = found(prefixes)
        if pairs := sorted({f" {a} {b} " for a, b in zip(words, words[1:], strict=False)}):
            X[:, col["q_bigram"]] = found(pairs)
        X[:, col["q_last_in_title"]] = found([f" {words[-1]} "])

    def _fill_scores(self, ids: Sequence[str], item_scores: ItemScores, X: np.ndarray) -> None:
        """Item-score columns: per name value and gap to the query's best (0 where missing); a presence flag."""
        start = self.column[f"score__{self.score_names[0]}__value"]
        per_item = [item_scores.get(i) or {} for i in ids]
        for j, name in enumerate(self.score_names):
            vals = np.fromiter((np.nan if (v := d.get(name)) is None else float(v) for d in per_item), np.float64,
                               len(ids))
            have = ~np.isnan(vals)
            best = vals[have].max() if have.any() else 0.0
            X[:, start + 2 * j] = np.where(have, vals, 0.0)
            X[:, start + 2 * j + 1] = np.where(have, vals - best, 0.0)
        X[:, self.column["score__present"]] = np.fromiter(map(bool, per_item), np.float64, len(ids))
