"""A per-token sub-intent tagger trained on catalog titles by distant supervision.

Labels come from the mined :class:`~tandem.intent.mining.Vocabulary` (longest match; brands only
title-initially, the head noun as product type); the model — multinomial logistic regression
over sparse token features, trained with scikit-learn — then generalises past the exact
vocabulary through context, affixes and word shape. Training windows of 2–5 title tokens are
added so the model also sees query-like fragments (queries are short and lose title position).

Inference is pure Python over the pruned weight table (a query has a handful of tokens, and
a dict walk is faster than building a scipy matrix), and the table is JSON-serialisable.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tandem.intent.lexicon import BRAND, OTHER, TYPE, stem
from tandem.intent.mining import Vocabulary, head_phrase


def _shape(w: str) -> str:
    if w.isdigit():
        return "num"
    if any(c.isdigit() for c in w):
        return "alnum"
    return "alpha" if w.isalpha() else "mixed"


def token_features(words: Sequence[str], gaz: Sequence[str], i: int) -> list[str]:
    """Sparse binary features of token ``i`` (``gaz`` = the vocabulary's longest-match labels)."""
    w = words[i]
    prev = words[i - 1] if i > 0 else "<s>"
    nxt = words[i + 1] if i + 1 < len(words) else "</s>"
    return [
        "b", f"w={stem(w)}", f"p3={w[:3]}", f"s3={w[-3:]}", f"sh={_shape(w)}", f"g={gaz[i]}",
        f"pw={stem(prev)}", f"nw={stem(nxt)}", f"pg={gaz[i - 1] if i > 0 else '<s>'}",
        f"ng={gaz[i + 1] if i + 1 < len(words) else '</s>'}", f"g={gaz[i]}|nw={stem(nxt)}",
    ]


def distant_labels(words: Sequence[str], vocab: Vocabulary) -> list[str]:
    """Silver labels of a title: vocabulary matches, brands only at the start, and the head noun."""
    labels = vocab.longest_matches(words)
    # a brand phrase away from the title's start is usually a product line or a word ("Home").
    first_non_brand = next((i for i, lab in enumerate(labels) if lab != BRAND), len(labels))
    labels = [OTHER if lab == BRAND and i >= first_non_brand else lab for i, lab in enumerate(labels)]
    span = head_phrase(list(words))
    if span is not None and labels[span[0]] == OTHER:
        labels[span[0]] = TYPE
    return labels


class Tagger:
    """Multinomial logistic regression over :func:`token_features`, stored as a weight table."""

    def __init__(self, classes: Sequence[str], intercept: Sequence[float], weights: dict[str, list[float]]) -> None:
        self.classes = list(classes)
        self.intercept = list(intercept)
        self.weights = weights

    @classmethod
    def fit(cls, titles: Sequence[Sequence[str]], vocab: Vocabulary, *, max_titles: int = 8000,
            seed: int = 0, prune: float = 0.01) -> Tagger:
        """Train on (a sample of) tokenised titles labelled by :func:`distant_labels`."""
        from sklearn.feature_extraction import DictVectorizer
        from sklearn.linear_model import SGDClassifier

        rng = random.Random(seed)
        sample = list(titles) if len(titles) <= max_titles else rng.sample(list(titles), max_titles)
        X: list[dict[str, int]] = []
        y: list[str] = []
        for words in sample:
            if not words:
                continue
            labels = distant_labels(words, vocab)
            seqs = [(list(words), labels)]
            if len(words) > 3:  # a query-like window somewhere in the title
                n = rng.randint(2, min(5, len(words) - 1))
                i = rng.randint(0, len(words) - n)
                seqs.append((list(words[i:i + n]), labels[i:i + n]))
            for ws, ls in seqs:
                gaz = vocab.longest_matches(ws)
                for j in range(len(ws)):
                    X.append(dict.fromkeys(token_features(ws, gaz, j), 1))
                    y.append(ls[j])
        vec = DictVectorizer()
        matrix = vec.fit_transform(X).tocsr()
        matrix.indices = matrix.indices.astype("int32")  # scipy may pick int64; SGD wants int32
        matrix.indptr = matrix.indptr.astype("int32")
        clf = SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=8, tol=None, random_state=seed)
        clf.fit(matrix, y)
        names = vec.get_feature_names_out()
        coef = clf.coef_
        if coef.shape[0] == 1:  # binary case: sklearn keeps one row
            coef = [-coef[0], coef[0]]
        weights: dict[str, list[float]] = {}
        for j, name in enumerate(names):
            col = [float(coef[c][j]) for c in range(len(clf.classes_))]
            if max(abs(v) for v in col) >= prune:
                weights[str(name)] = [round(v, 4) for v in col]
        intercept = [float(v) for v in clf.intercept_] if len(clf.intercept_) == len(clf.classes_) \
            else [0.0] * len(clf.classes_)
        return cls([str(c) for c in clf.classes_], intercept, weights)

    def tag(self, words: Sequence[str], vocab: Vocabulary) -> list[str]:
        """The best label of each token."""
        gaz = vocab.longest_matches(words)
        out = []
        n = len(self.classes)
        for i in range(len(words)):
            scores = list(self.intercept)
            for f in token_features(words, gaz, i):
                w = self.weights.get(f)
                if w is not None:
                    for c in range(n):
                        scores[c] += w[c]
            out.append(self.classes[max(range(n), key=scores.__getitem__)])
        return out

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"classes": self.classes, "intercept": self.intercept, "weights": self.weights}

    @classmethod
    def from_dict(cls, d: dict) -> Tagger:
        """Inverse of :meth:`to_dict`."""
        return cls(d["classes"], d["intercept"], {k: list(v) for k, v in d["weights"].items()})
