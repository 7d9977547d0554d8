"""Features of a candidate item for learned fusion, computed from the ranked lists alone (plus
titles when available), so the same code serves training and the query path.

Per *slot* — a ``(source, intent kind)`` pair such as ``(bm25, query)`` or
``(generative, brand)`` — three features: reciprocal rank, min-max normalised score and
presence. Then agreement (lists and sources returning the item), the RRF score and the best
reciprocal rank; with titles, the share of query words in the title, the best share of any
sub-intent's words in the title (sub-intent match), whether the product-type sub-query is
fully in the title, and the title length. With item scores (``score_names``, e.g. the
generative model's log-probability of the item's ID and the encoder's cosine, given for
*every* candidate by :meth:`~tandem.retriever.Retriever.score_items`): per score its value and
its gap to the best candidate of the query, and one flag saying whether the item was scored
(a missing score is 0 with the flag 0, never a failed search).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from tandem.fusion.base import ItemScores, RankedList
from tandem.fusion.normalized import normalize_scores

Slot = tuple[str, str]
_WORD = re.compile(r"[a-z0-9]+")
AGGREGATES = ("n_lists", "n_sources", "rrf", "best_rr")
TITLE_FEATURES = ("q_in_title", "sub_in_title", "type_in_title", "title_len")


def _stems(text: str) -> set[str]:
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in _WORD.findall(text.lower())}


def feature_names(slots: Sequence[Slot], with_titles: bool, score_names: Sequence[str] = ()) -> list[str]:
    """Column names, in order (stored with the model so a mismatch is detected)."""
    names = [f"{s}__{k}__{f}" for s, k in slots for f in ("rr", "norm", "present")]
    names += list(AGGREGATES) + (list(TITLE_FEATURES) if with_titles else [])
    if score_names:
        names += [f"score__{n}__{f}" for n in score_names for f in ("value", "gap")] + ["score__present"]
    return names


class FeatureBuilder:
    """Builds the candidate × feature matrix for one query's ranked lists."""

    def __init__(self, slots: Sequence[Slot], titles: Callable[[Sequence[str]], Mapping[str, str]] | None = None,
                 rrf_k: float = 60.0, score_names: Sequence[str] = ()) -> None:
        self.slots = [tuple(s) for s in slots]
        self.score_names = tuple(score_names)
        self._index = {s: i for i, s in enumerate(self.slots)}
        self.titles = titles
        self.rrf_k = rrf_k
        self._title_cache: dict[str, tuple[set[str], int]] = {}
        self.names = feature_names(self.slots, titles is not None, self.score_names)

    def _title_stems(self, item_ids: Sequence[str]) -> list[tuple[set[str], int]]:
        missing = [i for i in item_ids if i not in self._title_cache]
        if missing:
            found = self.titles(missing)
            for i in missing:
                t = found.get(i, "")
                if len(self._title_cache) > 200_000:  # bound memory on a long-running server
                    self._title_cache.clear()
                self._title_cache[i] = (_stems(t), len(t.split()))
        return [self._title_cache[i] for i in item_ids]

    def build(self, lists: Sequence[RankedList], item_scores: ItemScores | None = None) -> tuple[list[str], np.ndarray]:
        """Candidate ids (first-seen order) and their feature matrix (``float32``)."""
        ids, X, _ = self.build_with_evidence(lists, item_scores)
        return ids, X

    def build_with_evidence(self, lists: Sequence[RankedList], item_scores: ItemScores | None = None
                            ) -> tuple[list[str], np.ndarray, dict[str, dict[str, tuple[int, float]]]]:
        """:meth:`build` plus each item's best ``(rank, score)`` per source (for provenance).

        Rows are filled as Python lists and converted once: per-element NumPy writes cost
        more than the whole feature computation at ~300 candidates.
        """
        width = len(self.names)
        base = 3 * len(self.slots)
        rows: dict[str, list[float]] = {}
        evidence: dict[str, dict[str, tuple[int, float]]] = {}
        for rl in lists:
            s = self._index.get((rl.source, rl.intent_kind))
            c = 3 * s if s is not None else -1
            norms = normalize_scores([h.score for h in rl.hits], "minmax")
            seen: set[str] = set()
            for rank, (h, norm) in enumerate(zip(rl.hits, norms), start=1):
                item = h.item_id
                if item in seen:
                    continue
                seen.add(item)
                row = rows.get(item)
                if row is None:
                    row = rows[item] = [0.0] * width
                    evidence[item] = {}
                ev = evidence[item]
                best = ev.get(rl.source)
                if best is None or rank < best[0]:
                    ev[rl.source] = (rank, h.score)
                rr = 1.0 / rank
                row[base] += 1
                row[base + 2] += rl.intent_weight / (self.rrf_k + rank)
                if rr > row[base + 3]:
                    row[base + 3] = rr
                if c >= 0:
                    if rr > row[c]:
                        row[c] = rr
                    if norm > row[c + 1]:
                        row[c + 1] = norm
                    row[c + 2] = 1.0
        ids = list(rows)
        for item in ids:
            rows[item][base + 1] = len(evidence[item])
        if self.titles is not None and ids:
            query = next((rl.intent for rl in lists if rl.intent_kind == "query"), lists[0].intent)
            q = _stems(query)
            subs = [sb for sb in (_stems(rl.intent) for rl in lists if rl.intent_kind not in ("query", "normalized"))
                    if sb]
            typ = next((_stems(rl.intent) for rl in lists if rl.intent_kind == "product_type"), set())
            t0 = base + len(AGGREGATES)
            for item, (stems, length) in zip(ids, self._title_stems(ids)):
                row = rows[item]
                row[t0] = len(q & stems) / len(q) if q else 0.0
                row[t0 + 1] = max((len(sb & stems) / len(sb) for sb in subs), default=0.0)
                row[t0 + 2] = float(bool(typ) and typ <= stems)
                row[t0 + 3] = length
        if self.score_names and ids:
            self._fill_scores(ids, rows, item_scores or {}, width - 1 - 2 * len(self.score_names))
        X = np.array([rows[i] for i in ids], dtype=np.float32).reshape(len(ids), width)
        return ids, X, evidence

    def _fill_scores(self, ids: Sequence[str], rows: dict[str, list[float]], item_scores: ItemScores,
                     start: int) -> None:
        """Item-score columns from ``start``: per name value and gap to the query's best; a presence flag."""
        for j, name in enumerate(self.score_names):
            vals = {i: float(v) for i in ids if (v := (item_scores.get(i) or {}).get(name)) is not None}
            best = max(vals.values(), default=0.0)
            for i, v in vals.items():
                rows[i][start + 2 * j] = v
                rows[i][start + 2 * j + 1] = v - best
        for i in ids:
            rows[i][-1] = float(bool(item_scores.get(i)))
