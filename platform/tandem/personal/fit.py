"""Fitting the profile re-ranking weights on logged clicks, corrected for position bias.

Users click what they see first: in logs of the non-personalised ranking, a click says as much
about the position as about the item. A fit that scores a re-ranking by the nDCG of the logged
clicks (the previous design) therefore prefers the logged order itself, and on the simulated
sessions it kept every weight at 0 (``bench.feedback``: personalisation gain +0.0 while the
default weights gave +0.013).

This fit is *position-aware learning* (Guo et al., "PAL: a position-bias aware learning
framework", RecSys 2019; position as a feature in the click model): a logistic regression of
"clicked" on every shown impression,

    logit P(click) = a_position + Σ_f w_f · f(item),   f ∈ PROFILE_SCORES,

so the per-position intercepts ``a`` absorb how often each position is looked at, and ``w``
is what a profile feature does to the odds of a click *at the same position*. By default only
the impressions down to a session's last click are read (``examined="cascade"``, the cascade
hypothesis of Craswell et al., WSDM 2008): a user who clicked and stopped never saw what lies
below, and counting those items as skips pulls ``w`` towards 0 (``bench.feedback``, full run:
+0.0085 nDCG@10 against +0.0043 reading every shown impression, ``examined="all"``). The ranker the
logs came from does not know the user, so position and profile features are close to
independent and ``w`` is not the position's effect in disguise.

Serving uses ``w`` unchanged with the ``logrank`` base of
:class:`~tandem.personal.rerank.PersonalFuser` (``−ln rank + Σ w_f f``): the inner ranking read
as relevance odds falling as 1/rank, multiplied by the profile's odds ratio. How relevance
falls with rank cannot be learned from these logs (in them rank and position are the same),
so 1/rank is an assumption, stated in the fit's report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tandem.errors import InvalidInput
from tandem.personal.features import PROFILE_SCORES
from tandem.personal.rerank import Session

#: The ridge penalty on every coefficient (a few hundred sessions: keep the fit stable).
RIDGE = 1.0


EXAMINED = ("all", "cascade")
"""Which impressions count as looked at: every shown one (a position-based model), or those
down to the session's last click (the cascade hypothesis: a user who clicked and stopped never
saw what lies below, so it is no evidence against it)."""


def _design(sessions: Sequence[Session], shown: int, examined: str) -> tuple[np.ndarray, np.ndarray]:
    rows, ys = [], []
    for s in sessions:
        top = s.fused[:shown]
        if examined == "cascade":
            clicked = [pos for pos, hit in enumerate(top) if s.gains.get(hit.item_id, 0.0) > 0]
            top = top[: clicked[-1] + 1] if clicked else top
        for pos, hit in enumerate(top):
            vals = s.scores.get(hit.item_id) or {}
            onehot = [0.0] * shown
            onehot[pos] = 1.0
            rows.append(onehot + [float(vals.get(f, 0.0)) for f in PROFILE_SCORES])
            ys.append(1.0 if s.gains.get(hit.item_id, 0.0) > 0 else 0.0)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), shown + len(PROFILE_SCORES)), np.asarray(ys)


def _logistic(X: np.ndarray, y: np.ndarray, ridge: float, iters: int = 50) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge-penalised logistic regression by Newton's method: coefficients, their standard
    errors (from the penalised Hessian) and the log-likelihood."""
    w = np.zeros(X.shape[1])
    eye = ridge * np.eye(X.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        H = (X * (p * (1 - p))[:, None]).T @ X + eye
        step = np.linalg.solve(H, X.T @ (y - p) - ridge * w)
        w += step
        if float(np.abs(step).max()) < 1e-8:
            break
    p = np.clip(1.0 / (1.0 + np.exp(-(X @ w))), 1e-12, 1 - 1e-12)
    H = (X * (p * (1 - p))[:, None]).T @ X + eye
    se = np.sqrt(np.diag(np.linalg.inv(H)))
    return w, se, float(y @ np.log(p) + (1 - y) @ np.log(1 - p))


def fit_weights(sessions: Sequence[Session], shown: int = 10, ridge: float = RIDGE, examined: str = "cascade"
                ) -> tuple[dict[str, float], dict[str, Any]]:
    """Profile feature weights from logged sessions (module docstring).

    Each session's ``fused`` is the ranking the user was shown (its top ``shown`` are the
    impressions), ``scores`` the profile features read at search time, ``gains`` what the user
    clicked or bought (any gain > 0 is a click). Returns the weights and a report: sessions,
    impressions, clicks, the per-position click odds relative to position 1 (the examination
    curve the fit found), each kept weight's standard error, the features dropped for a
    negative weight (they get 0), and the log-likelihood with and without the profile features."""
    if shown < 1:
        raise InvalidInput(f"`shown` must be >= 1, got {shown}")
    if examined not in EXAMINED:
        raise InvalidInput(f"`examined` must be one of {EXAMINED}, got {examined!r}")
    usable = [s for s in sessions if any(g > 0 for g in s.gains.values())]
    if not usable:
        raise InvalidInput("no session with a click or purchase to fit profile weights on")
    X, y = _design(usable, shown, examined)
    used = X[:, :shown].sum(0) > 0  # positions never shown (short result lists) have no intercept
    X = np.hstack([X[:, :shown][:, used], X[:, shown:]])
    n_pos = int(used.sum())
    # Non-negative weights (a profile match does not make a click less likely; with a few
    # hundred sessions the collinear features otherwise trade signs): drop the most negative
    # feature and refit until none is negative.
    keep = list(range(len(PROFILE_SCORES)))
    while True:
        w, se, loglik = _logistic(X[:, list(range(n_pos)) + [n_pos + j for j in keep]], y, ridge)
        b = w[n_pos:]
        if not keep or b.min() >= 0:
            break
        keep.pop(int(b.argmin()))
    _, _, loglik0 = _logistic(X[:, :n_pos], y, ridge)
    a = w[:n_pos]
    weights = dict.fromkeys(PROFILE_SCORES, 0.0) | {PROFILE_SCORES[j]: round(float(v), 4) for j, v in zip(keep, b, strict=True)}
    errors = {PROFILE_SCORES[j]: round(float(v), 4) for j, v in zip(keep, se[n_pos:], strict=True)}
    report = {"method": "position-aware logistic click model", "examined": examined, "base": "logrank",
              "sessions": len(usable),
              "impressions": int(len(y)), "clicks": int(y.sum()),
              "position_click_odds": [round(math.exp(float(v - a[0])), 4) for v in a],
              "weight_se": errors, "dropped_negative": [f for j, f in enumerate(PROFILE_SCORES) if j not in keep],
              "loglik": round(loglik, 3), "loglik_positions_only": round(loglik0, 3),
              "assumes": "inner relevance odds fall as 1/rank (logrank base)"}
    return weights, report


__all__ = ["EXAMINED", "RIDGE", "fit_weights"]
