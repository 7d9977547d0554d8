"""Metrics over runs with ir-measures, per query and aggregated, plus paired significance tests."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import ir_measures
import numpy as np

from tandem.errors import InvalidInput
from tandem.eval.runs import Run


def default_measures(rel: int = 4) -> list[str]:
    """The project's official measures with relevance threshold ``rel``.

    nDCG@10 (graded), R@10, R@100, RR@10, AP and P@30 (grade >= ``rel`` is relevant). When
    ``rel`` is not 1, AP and P@30 at ir-measures' default threshold (grade >= 1) are added,
    since those are the usual MAP/P@30 figures reported for graded collections.
    """
    if rel < 1:
        raise InvalidInput(f"`rel` must be >= 1, got {rel}")
    r = "" if rel == 1 else f"(rel={rel})"
    names = ["nDCG@10", f"R{r}@10", f"R{r}@100", f"RR{r}@10", f"AP{r}", f"P{r}@30"]
    if rel != 1:
        names += ["AP", "P@30"]
    return names


def parse_measures(names: Sequence[str]) -> list[ir_measures.Measure]:
    """ir-measures objects for measure names; a bad name raises :class:`InvalidInput`."""
    out = []
    for name in names:
        try:
            out.append(ir_measures.parse_measure(name))
        except (ValueError, NameError, SyntaxError) as e:
            raise InvalidInput(f"`measures`: {name!r} is not an ir-measures measure ({e})") from None
    return out


@dataclass
class EvalResult:
    """Aggregate and per-query values of a set of measures for one run."""

    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    queries: int
    """Queries evaluated: judged queries of the query set (unanswered ones count as 0)."""
    unjudged_queries: list[str] = field(default_factory=list)
    """Queries of the set with no judgements at all (not evaluated)."""


def evaluate(
    run: Run,
    qrels: Mapping[str, Mapping[str, int]],
    measures: Sequence[str] | None = None,
    queries: Sequence[str] | None = None,
) -> EvalResult:
    """Evaluate ``run`` against ``qrels``.

    The order of each ranking is the system's (scores are replaced by descending ranks,
    so ties cannot be re-ordered by the evaluator). Queries evaluated: those of
    ``queries`` (default: every judged query) that have judgements; a judged query the
    run did not answer scores 0 on every measure rather than being dropped.
    """
    names = list(measures or default_measures())
    parsed = parse_measures(names)
    qset = list(queries) if queries is not None else list(qrels)
    judged = [q for q in qset if q in qrels]
    unjudged = [q for q in qset if q not in qrels]
    if not judged:
        raise InvalidInput("`qrels` judge none of the queries; check that the query ids match")
    scored: list[ir_measures.ScoredDoc] = []
    for qid in judged:
        hits = run.get(qid, [])
        scored.extend(ir_measures.ScoredDoc(qid, docid, float(len(hits) - rank)) for rank, (docid, _) in enumerate(hits))
    sub_qrels = [ir_measures.Qrel(qid, docid, grade) for qid in judged for docid, grade in qrels[qid].items()]
    per_query: dict[str, dict[str, float]] = {q: dict.fromkeys(names, 0.0) for q in judged}
    by_obj = dict(zip(parsed, names))
    for m in ir_measures.iter_calc(parsed, sub_qrels, scored):
        per_query[m.query_id][by_obj[m.measure]] = float(m.value)
    metrics = {n: float(np.mean([per_query[q][n] for q in judged])) for n in names}
    return EvalResult(metrics=metrics, per_query=per_query, queries=len(judged), unjudged_queries=unjudged)


@dataclass(frozen=True)
class Significance:
    """Paired comparison of two systems on one measure."""

    measure: str
    mean_a: float
    mean_b: float
    delta: float
    t_p_value: float
    randomisation_p_value: float
    queries: int


def paired_significance(
    a: EvalResult, b: EvalResult, measures: Sequence[str] | None = None, trials: int = 10_000, seed: int = 13
) -> list[Significance]:
    """Paired two-sided t-test and randomisation (sign-flip) test of ``b`` against ``a``.

    Only queries evaluated in both results are used. The randomisation test flips the
    sign of each per-query difference at random ``trials`` times (Smucker et al., 2007).
    """
    # scipy.special (not scipy.stats, which takes seconds to import) for the t tail.
    from scipy.special import stdtr

    common = sorted(set(a.per_query) & set(b.per_query))
    if len(common) < 2:
        raise InvalidInput("`significance` needs at least two queries evaluated in both runs")
    names = list(measures or [n for n in a.metrics if n in b.metrics])
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(trials, len(common)))
    out = []
    for name in names:
        xa = np.array([a.per_query[q][name] for q in common])
        xb = np.array([b.per_query[q][name] for q in common])
        diff = xb - xa
        if np.allclose(diff, 0):
            t_p, r_p = 1.0, 1.0
        else:
            sd = diff.std(ddof=1)
            if sd == 0:  # every query moved by the same amount: no variance, certain
                t_p = 0.0
            else:
                t = diff.mean() / (sd / math.sqrt(len(diff)))
                t_p = float(2 * stdtr(len(diff) - 1, -abs(t)))
            observed = abs(diff.mean())
            null = np.abs((signs * diff).mean(axis=1))
            r_p = float((np.sum(null >= observed - 1e-12) + 1) / (trials + 1))
        out.append(
            Significance(
                measure=name,
                mean_a=float(xa.mean()),
                mean_b=float(xb.mean()),
                delta=float(diff.mean()),
                t_p_value=t_p if not math.isnan(t_p) else 1.0,
                randomisation_p_value=r_p,
                queries=len(common),
            )
        )
    return out


def per_query_table(results: Mapping[str, EvalResult]) -> list[dict[str, object]]:
    """Rows ``{system, qid, <measure>...}`` for a per-query CSV."""
    rows: list[dict[str, object]] = []
    for system, res in results.items():
        for qid, values in res.per_query.items():
            rows.append({"system": system, "qid": qid, **values})
    return rows
