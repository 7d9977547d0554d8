"""Robustness evaluation (seed chapter, section 5.4.3): perturbed query sets and RobustScore.

Three suites perturb every query of a set, deterministically by seed (each query gets its
own generator seeded with ``(seed, suite, crc32(qid))``, so adding a query changes no
other query's perturbation):

* ``typo`` (character level): swap two adjacent letters, drop one, insert one, or replace
  one by a QWERTY neighbour — in one word of 3+ letters;
* ``word``: replace a word by a synonym (a small built-in hardware table, optionally
  extended from catalog co-occurrence) or, when none applies, drop a word;
* ``sentence``: reorder the words (head noun first) or wrap the query in a shopper
  paraphrase template ("best {q}", "{q} for home" ...).

``RobustScore = measure(perturbed) / measure(clean)`` per measure, suite and system; a
system that is unaffected scores 1.0. Single-word queries are perturbed too (a typo; the
word and sentence suites fall back to a template), so every suite changes every query.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tandem.catalog.queries import Qrels
from tandem.errors import InvalidInput
from tandem.eval.runs import Run

SUITES = ("typo", "word", "sentence")

_ROWS = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
KEYBOARD: dict[str, str] = {}
for _r, _row in enumerate(_ROWS):
    for _c, _ch in enumerate(_row):
        near = [_row[_c - 1] if _c else "", _row[_c + 1] if _c + 1 < len(_row) else ""]
        for _dr in (-1, 1):
            if 0 <= _r + _dr < len(_ROWS):
                other = _ROWS[_r + _dr]
                near += [other[j] for j in (_c - 1, _c, _c + 1) if 0 <= j < len(other)]
        KEYBOARD[_ch] = "".join(n for n in near if n)

#: Hardware-store synonyms, both directions applied. Written for Tandem.
SYNONYMS: dict[str, list[str]] = {
    "large": ["big"], "big": ["large"], "small": ["mini", "little"], "mini": ["small"],
    "gray": ["grey"], "grey": ["gray"], "heavy duty": ["industrial"], "compact": ["small"],
    "lamp": ["light"], "light": ["lamp"], "bulb": ["lamp"], "faucet": ["tap"], "tap": ["faucet"],
    "cabinet": ["cupboard"], "shelf": ["shelving"], "hose": ["tubing"], "pipe": ["tube"],
    "cordless": ["battery"], "wrench": ["spanner"], "couch": ["sofa"], "rug": ["carpet"],
    "door knob": ["door handle"], "knob": ["handle"], "drill": ["driver"], "fridge": ["refrigerator"],
    "refrigerator": ["fridge"], "stove": ["range"], "range": ["stove"], "toilet": ["commode"],
    "outlet": ["receptacle"], "receptacle": ["outlet"], "sink": ["basin"], "vanity": ["bathroom cabinet"],
    "fence": ["fencing"], "paint": ["coating"], "stain": ["finish"], "screws": ["fasteners"],
    "steel": ["metal"], "stainless": ["stainless steel"], "white": ["ivory"], "black": ["dark"],
    "shower head": ["showerhead"], "showerhead": ["shower head"], "ceiling fan": ["fan"],
    "mower": ["lawnmower"], "lawn mower": ["lawnmower"], "blinds": ["shades"], "shades": ["blinds"],
    "tile": ["tiles"], "lumber": ["wood"], "wood": ["lumber"], "led": ["led light"],
}

PARAPHRASES = ("best {q}", "{q} for home", "cheap {q}", "{q} on sale", "looking for {q}", "{q} replacement")


def _rng(seed: int, suite: str, qid: str) -> np.random.Generator:
    return np.random.default_rng([seed, SUITES.index(suite) if suite in SUITES else 99, zlib.crc32(qid.encode())])


def typo(word: str, rng: np.random.Generator) -> str:
    """One character edit of ``word``: adjacent swap, drop, insert or keyboard neighbour."""
    if len(word) < 2:
        return word + word if word else word
    op = int(rng.integers(4))
    i = int(rng.integers(len(word) - 1))
    if op == 0 and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == 1 and len(word) > 3:
        return word[:i] + word[i + 1 :]
    ch = word[i].lower()
    near = KEYBOARD.get(ch, "")
    if op == 3 and near:
        return word[:i] + near[int(rng.integers(len(near)))] + word[i + 1 :]
    # insert (also the fallback for the edits above that would be no-ops)
    pool = near or "aeiou"
    return word[: i + 1] + pool[int(rng.integers(len(pool)))] + word[i + 1 :]


def typo_query(query: str, rng: np.random.Generator) -> str:
    """``query`` with one typo in one of its longest-enough words (3+ letters, else any)."""
    words = query.split()
    if not words:
        return query
    cands = [i for i, w in enumerate(words) if len(w) >= 3 and w.isalpha()] or list(range(len(words)))
    i = cands[int(rng.integers(len(cands)))]
    words[i] = typo(words[i], rng)
    return " ".join(words)


def word_query(query: str, rng: np.random.Generator, synonyms: Mapping[str, Sequence[str]] = SYNONYMS) -> str:
    """Replace one word or two-word phrase by a synonym; else drop a word; single words
    without a synonym get a paraphrase template (dropping would leave nothing)."""
    words = query.lower().split()
    spans = [(i, 2) for i in range(len(words) - 1) if " ".join(words[i : i + 2]) in synonyms]
    spans += [(i, 1) for i, w in enumerate(words) if w in synonyms]
    if spans:
        i, n = spans[int(rng.integers(len(spans)))]
        options = synonyms[" ".join(words[i : i + n])]
        return " ".join([*words[:i], options[int(rng.integers(len(options)))], *words[i + n :]])
    if len(words) > 1:
        drop = int(rng.integers(len(words)))
        return " ".join(w for j, w in enumerate(words) if j != drop)
    return paraphrase(query, rng)


def paraphrase(query: str, rng: np.random.Generator) -> str:
    """``query`` inside a shopper template ("best {q}", "{q} for home" ...)."""
    return PARAPHRASES[int(rng.integers(len(PARAPHRASES)))].format(q=query)


def sentence_query(query: str, rng: np.random.Generator) -> str:
    """Reorder the words (the last word — usually the head noun — first) or paraphrase."""
    words = query.split()
    if len(words) > 1 and rng.random() < 0.5:
        return " ".join([words[-1], *words[:-1]])
    return paraphrase(query, rng)


def perturb_queries(queries: Mapping[str, str], suite: str, seed: int = 0,
                    synonyms: Mapping[str, Sequence[str]] = SYNONYMS) -> dict[str, str]:
    """The query set with every query perturbed by ``suite``; qids are kept."""
    if suite not in SUITES:
        raise InvalidInput(f"`suite` must be one of {', '.join(SUITES)}, got {suite!r}")
    out: dict[str, str] = {}
    for qid, text in queries.items():
        rng = _rng(seed, suite, qid)
        if suite == "typo":
            new = typo_query(text, rng)
        elif suite == "word":
            new = word_query(text, rng, synonyms)
        else:
            new = sentence_query(text, rng)
        out[qid] = new if new.strip() else text
    return out


def cooccurrence_synonyms(texts: Sequence[str], top_words: int = 2000, min_similarity: float = 0.5,
                          per_word: int = 2) -> dict[str, list[str]]:
    """Substitutes learned from a catalog: words whose document co-occurrence profiles are
    most alike (cosine over the ``top_words`` most frequent words), e.g. colours or
    materials that appear with the same product words. Distributional, so they are
    *interchangeable* words rather than true synonyms: the augmentation's word substitution
    and a harder ``word`` suite both want exactly that."""
    from collections import Counter

    df: Counter[str] = Counter()
    docs = [sorted({w for w in t.lower().split() if w.isalpha() and len(w) > 2}) for t in texts]
    for d in docs:
        df.update(d)
    vocab = [w for w, _ in df.most_common(top_words)]
    index = {w: i for i, w in enumerate(vocab)}
    if len(vocab) < 2:
        return {}
    x = np.zeros((len(vocab), len(docs)), dtype=np.float32)
    for j, d in enumerate(docs):
        for w in d:
            if w in index:
                x[index[w], j] = 1.0
    co = x @ x.T
    np.fill_diagonal(co, 0.0)
    norm = np.linalg.norm(co, axis=1, keepdims=True)
    unit = co / np.maximum(norm, 1e-9)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -1.0)
    # Words that co-occur in one document are parts of one phrase, not substitutes.
    sim[co > 0] = -1.0
    out: dict[str, list[str]] = {}
    for i, w in enumerate(vocab):
        best = np.argsort(-sim[i], kind="stable")[:per_word]
        subs = [vocab[j] for j in best if sim[i, j] >= min_similarity]
        if subs:
            out[w] = subs
    return out


def robust_scores(clean: Mapping[str, float], perturbed: Mapping[str, float]) -> dict[str, float | None]:
    """``perturbed / clean`` per measure; ``None`` where the clean figure is 0 (undefined)."""
    return {m: (perturbed[m] / clean[m]) if clean[m] else None for m in clean}


def evaluate_robustness(
    run_fn: Callable[[Mapping[str, str]], Run],
    queries: Mapping[str, str],
    qrels: Qrels,
    measures: Sequence[str],
    suites: Sequence[str] = SUITES,
    seed: int = 0,
    clean_run: Run | None = None,
) -> dict[str, Any]:
    """Clean and per-suite figures and RobustScores for one system.

    ``run_fn`` retrieves a run for a query set (e.g. ``lambda qs: run_retriever(r, qs, k)``);
    ``clean_run``, when the caller already has it, saves retrieving the clean set again.
    Returns ``{"clean": {measure: v}, "suites": {suite: {"metrics": ..., "robust_score":
    ..., "changed": share of queries the suite changed}}}``.
    """
    from tandem.eval.metrics import evaluate

    for s in suites:
        if s not in SUITES:
            raise InvalidInput(f"`suite` must be one of {', '.join(SUITES)}, got {s!r}")
    first = clean_run if clean_run is not None else run_fn(queries)
    clean = evaluate(first, qrels, measures, queries=list(queries)).metrics
    per_suite: dict[str, Any] = {}
    for s in suites:
        pert = perturb_queries(queries, s, seed)
        metrics = evaluate(run_fn(pert), qrels, measures, queries=list(queries)).metrics
        changed = sum(pert[q] != queries[q] for q in queries) / max(len(queries), 1)
        per_suite[s] = {"metrics": metrics, "robust_score": robust_scores(clean, metrics), "changed": round(changed, 4)}
    return {"clean": clean, "suites": per_suite}
