"""Learned fusion: LambdaMART (LightGBM ``lambdarank``) over :mod:`tandem.fusion.features`.

Trained on the candidate lists of train queries against their qrels and selected on dev
(early stopping on dev nDCG@10, then the best of a small grid). Click and purchase logs can
add objectives (section 5.5): the training label becomes

    label = grade + click_weight · [clicked] + purchase_weight · [purchased]

rounded to an integer (LambdaMART needs graded integer labels). Gains are linear in the label
(:data:`LINEAR_GAIN`, as the trec_eval nDCG the project reports counts them; LightGBM's
default 2^label − 1 weighs a grade-6 item 4x a grade-4 one) and the pairwise lambdas reach
down to rank :data:`TRUNCATION` (LightGBM's default 30 leaves the rest of a 100-deep list
unordered). On the full Home Depot catalog both together moved dev nDCG@10 0.4319 → 0.4354
(R@100 0.7700 → 0.7695) with the loose title matches, 0.4171 → 0.4197 without. The logs are JSONL, one event
per line: ``{"qid": "q1", "item_id": "100001", "event": "click" | "purchase"}``; quality is
still measured on qrels only.

Stored as JSON (``tandem.fusion.learned/1``): slots, item-score names (``scores``, absent in
models from before item scores), feature names and LightGBM's text model.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tandem.errors import CorruptArtifact, InvalidInput
from tandem.fusion.base import FusedHit, Fuser, ItemScores, RankedList
from tandem.fusion.features import TITLE_FEATURES, FeatureBuilder, Slot

FORMAT = "tandem.fusion.learned/1"


@dataclass
class Example:
    """One training query: its candidate lists, graded labels and item scores by item id."""

    lists: Sequence[RankedList]
    labels: Mapping[str, float]
    scores: ItemScores | None = None


def read_events(path: str | Path) -> dict[str, dict[str, set[str]]]:
    """Click/purchase events (JSONL, see the module docstring) as ``{qid: {item_id: {events}}}``."""
    out: dict[str, dict[str, set[str]]] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                e = json.loads(line)
                qid, item, event = str(e["qid"]), str(e["item_id"]), str(e["event"])
            except (ValueError, KeyError, TypeError):
                raise InvalidInput(f"`events` line {n}: expected {{\"qid\", \"item_id\", \"event\"}}") from None
            if event not in ("click", "purchase"):
                raise InvalidInput(f"`events` line {n}: `event` must be click or purchase, got {event!r}")
            out.setdefault(qid, {}).setdefault(item, set()).add(event)
    return out


def combine_labels(grades: Mapping[str, float], events: Mapping[str, set[str]] | None = None,
                   click_weight: float = 0.0, purchase_weight: float = 0.0) -> dict[str, int]:
    """Integer training labels from qrels grades and optional events (module docstring)."""
    if click_weight < 0 or purchase_weight < 0:
        raise InvalidInput("`click_weight` and `purchase_weight` must be >= 0")
    items = set(grades) | set(events or {})
    out = {}
    for i in items:
        ev = (events or {}).get(i, set())
        v = max(0.0, float(grades.get(i, 0))) + click_weight * ("click" in ev) + purchase_weight * ("purchase" in ev)
        out[i] = min(30, int(round(v)))  # LINEAR_GAIN covers 0..30
    return out


#: LightGBM ``label_gain``: gain = label for every label :func:`combine_labels` can give (0..30).
LINEAR_GAIN = ",".join(str(g) for g in range(31))
#: LightGBM ``lambdarank_truncation_level``: ranks whose pairs get lambdas (the served depth).
TRUNCATION = 100


class LearnedFusion(Fuser):
    """A trained LambdaMART ranker over fused candidates (see the module docstring)."""

    name = "learned"

    def __init__(self, model: str, slots: Sequence[Slot], names: Sequence[str], *,
                 titles: Callable[[Sequence[str]], Mapping[str, str]] | None = None,
                 score_names: Sequence[str] = ()) -> None:
        import lightgbm as lgb

        self.model_text = model
        self.slots: list[tuple[str, str]] = [(str(s[0]), str(s[1])) for s in slots]
        self.score_names = tuple(score_names)
        # title columns as fitted: a model from before the loose title matches keeps working
        self.builder = FeatureBuilder(self.slots, titles, score_names=self.score_names,
                                      title_features=[n for n in names if n in TITLE_FEATURES])
        if list(names) != self.builder.names:
            raise CorruptArtifact("the model's features do not match this build's (or titles are missing): "
                                  f"{len(names)} stored vs {len(self.builder.names)} computed")
        self.booster = lgb.Booster(model_str=model)
        import hashlib

        self._version = f"learned:{hashlib.sha1(model.encode()).hexdigest()[:12]}"

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, train: Sequence[Example], dev: Sequence[Example], *, slots: Sequence[Slot] | None = None,
              titles: Callable[[Sequence[str]], Mapping[str, str]] | None = None,
              grid: Sequence[Mapping[str, float]] | None = None, seed: int = 0,
              num_threads: int = 1, score_names: Sequence[str] = (),
              title_features: Sequence[str] = TITLE_FEATURES) -> tuple[LearnedFusion, dict[str, Any]]:
        """Fit one model per ``grid`` point (early-stopped on dev nDCG@10); keep the best on dev.

        ``score_names``: item scores (in the examples' ``scores``) to use as features;
        ``title_features``: the title columns (all by default; the ablation leaves some out).
        Returns the model and its dev nDCG@10 over the candidates (a selection signal, not the
        reported figure: that comes from the evaluation harness over the final rankings).
        One thread by default: LightGBM's OpenMP workers spin, and on a shared small machine
        two of them ran a 600-query training 10x slower than one.
        """
        import lightgbm as lgb

        if not train or not dev:
            raise InvalidInput("`train` and `dev` must both hold examples")
        slots = list(slots) if slots is not None else sorted({(rl.source, rl.intent_kind)
                                                              for ex in train for rl in ex.lists})
        builder = FeatureBuilder(slots, titles, score_names=score_names, title_features=title_features)

        def matrix(examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray, list[int]]:
            xs, ys, groups = [], [], []
            for ex in examples:
                ids, X = builder.build(ex.lists, ex.scores)
                if not ids:
                    continue
                xs.append(X)
                ys.append(np.array([ex.labels.get(i, 0) for i in ids], dtype=np.float32))
                groups.append(len(ids))
            return np.vstack(xs), np.concatenate(ys), groups

        Xt, yt, gt = matrix(train)
        Xd, yd, gd = matrix(dev)
        grid = list(grid or [{"num_leaves": 15, "learning_rate": 0.05, "min_data_in_leaf": 50},
                             {"num_leaves": 31, "learning_rate": 0.05, "min_data_in_leaf": 20}])
        best: tuple[float, str, dict] | None = None
        for point in grid:
            params = {"objective": "lambdarank", "metric": "ndcg", "ndcg_eval_at": [10], "verbosity": -1,
                      "label_gain": LINEAR_GAIN, "lambdarank_truncation_level": TRUNCATION,
                      "seed": seed, "num_threads": num_threads, "deterministic": True, "force_row_wise": True,
                      "feature_fraction": 0.9, "bagging_fraction": 0.9, "bagging_freq": 1, **point}
            dtrain = lgb.Dataset(Xt, yt, group=gt, feature_name=builder.names, free_raw_data=False)
            ddev = lgb.Dataset(Xd, yd, group=gd, reference=dtrain)
            booster = lgb.train(params, dtrain, num_boost_round=500, valid_sets=[ddev],
                                callbacks=[lgb.early_stopping(30, verbose=False)])
            score = float(booster.best_score["valid_0"]["ndcg@10"])
            if best is None or score > best[0]:
                best = (score, booster.model_to_string(num_iteration=booster.best_iteration),
                        {**point, "rounds": booster.best_iteration})
        assert best is not None  # the grid is non-empty
        model = cls(best[1], slots, builder.names, titles=titles, score_names=score_names)
        return model, {"dev_ndcg@10_candidates": best[0], **{k: v if isinstance(v, str) else float(v) for k, v in best[2].items()}}

    # ------------------------------------------------------------------ ranking

    def fuse(self, lists: Sequence[RankedList], k: int, item_scores: ItemScores | None = None) -> list[FusedHit]:
        """Rank every candidate of ``lists`` by the model; at most ``k`` (see :meth:`Fuser.fuse`)."""
        if k < 1:
            raise InvalidInput(f"`k` must be >= 1, got {k}")
        c = self.builder.candidates(lists, item_scores)
        if not c.ids:
            return []
        # one LightGBM call over the float32 matrix (one thread: searches run in parallel)
        scores = np.asarray(self.booster.predict(c.X, num_threads=1), dtype=np.float64)
        # best first; ties by the best rank in any list, then by id
        order = np.lexsort((np.array(c.ids), c.best_rank(), -scores))[:k].tolist()
        values = scores.tolist()
        return [FusedHit(c.ids[j], values[j], ev) for j, ev in zip(order, c.provenance(order), strict=True)]

    def version(self) -> str:
        """``learned:<model digest>``."""
        return self._version

    # ------------------------------------------------------------------ storage

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON (atomically)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "slots": [list(s) for s in self.slots], "scores": list(self.score_names),
                   "features": self.builder.names, "model": self.model_text}
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".fusion-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; services may run as another user
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | Path, titles: Callable[[Sequence[str]], Mapping[str, str]] | None = None) -> LearnedFusion:
        """Inverse of :meth:`save`; ``titles`` is required when the model was trained with titles."""
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidInput(f"`path` {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise CorruptArtifact(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CorruptArtifact(f"{path} is not a {FORMAT} model")
        return cls(d["model"], [tuple(s) for s in d["slots"]], d["features"], titles=titles,
                   score_names=[str(n) for n in d.get("scores", [])])


def title_lookup(titles: Mapping[str, str]) -> Callable[[Sequence[str]], Mapping[str, str]]:
    """Adapt an id → title mapping to the ``titles`` callable the features use."""
    return lambda ids: {i: titles[i] for i in ids if i in titles}


def catalog_titles(catalog: object) -> Callable[[Sequence[str]], Mapping[str, str]]:
    """Adapt a :class:`tandem.search.ItemLookup` to the ``titles`` callable."""
    return lambda ids: {i: m.title for i, m in catalog.lookup(list(ids)).items()}  # type: ignore[attr-defined]


def examples(lists_by_query: Mapping[str, Sequence[RankedList]], qrels: Mapping[str, Mapping[str, float]],
             events: Mapping[str, Mapping[str, set[str]]] | None = None, click_weight: float = 0.0,
             purchase_weight: float = 0.0, scores: Mapping[str, ItemScores] | None = None) -> list[Example]:
    """Training examples of the judged queries among ``lists_by_query`` (``scores``: item scores per query)."""
    return [Example(lists, combine_labels(qrels[q], (events or {}).get(q), click_weight, purchase_weight),
                    (scores or {}).get(q))
            for q, lists in lists_by_query.items() if q in qrels]


__all__ = ["Example", "LearnedFusion", "catalog_titles", "combine_labels", "examples", "read_events",
           "title_lookup"]
