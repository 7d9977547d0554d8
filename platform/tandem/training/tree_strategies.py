"""Training strategies of the v1 (T5) trainer, carried over to the generative retriever v2.

Each is off by default (:class:`~tandem.training.tree_config.TreeTrainConfig`), so a run that
does not ask for one trains exactly as without this module; an ablation turns them on with
``--set``. They reuse the v1 primitives rather than copies of them:

* **augmentation** (seed chapter, section 5.3.3; ``augment_share``): :func:`augmented_pairs`
  rewrites a seeded share of the training queries once each
  (:func:`~tandem.training.augment.rewrite_query`: drop a word, swap two, or a typo), so
  query→id does not hang on exact wording. The rewrites depend only on (pairs, seed), so the
  run driver can encode them into the query state cache before the trainer draws the same
  ones (source ``"aug"``, trained in the align and the encoder stage).
* **curriculum** (5.3.4; ``curriculum``): every sample source has a level (:data:`LEVEL`,
  the order of :data:`tandem.training.curriculum.LEVELS`: the item text itself, title spans
  as the templated pseudo-queries, real queries, rewritten ones); :func:`curriculum_parts`
  lets an align epoch train only the levels :func:`~tandem.training.curriculum.max_level`
  opens, one more per epoch, all in the last. It depends on the epoch alone, so every rank of
  a distributed run keeps the same parts.
* **FGSM adversarial training** (5.4.1; ``fgsm_epsilon``): :func:`fgsm_tree_loss` is
  ``(L(x) + L(x + δ)) / 2`` with ``δ = ε·rms(x)·sign(∇_x L)``
  (:func:`~tandem.training.adversarial.fgsm_delta`). v1 perturbs the input embeddings of the
  model it trains; here the encoder is frozen in stages 2–3 and its outputs come from the state
  cache, so ``x`` is what the decoder reads: the cached token states (padding stays padding)
  and the pooled query vector. Perturbing them asks the decoder to decide the same ID for
  anything within a small ball around the encoder's output — the noise a slightly different
  wording, or the encoder's later adaptation, puts there — at the cost of one more
  forward-backward of the decoder only. ``ε`` is relative to the states' RMS, so one value
  suits any encoder's scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tandem.generative.tree_model import TreeDecoder, tree_loss
from tandem.training.adversarial import fgsm_delta
from tandem.training.augment import rewrite_query
from tandem.training.curriculum import max_level
from tandem.training.tree_data import Samples

#: Curriculum level of each sample source (the order of :data:`tandem.training.curriculum.LEVELS`).
LEVEL = {"doc": 0, "span": 1, "query": 2, "aug": 3}

#: Mixed into the seed of the rewrite draws, so they do not reuse the trainer's own stream.
_AUG_STREAM = 533


def augmented_pairs(pairs: Sequence[tuple[str, str]], share: float, seed: int) -> list[tuple[str, str]]:
    """(rewritten query, item id) for ``round(len(pairs) · share)`` pairs drawn without
    replacement (seeded: the same for the same ``pairs`` and ``seed``), each rewritten once by
    :func:`~tandem.training.augment.rewrite_query`; rewrites equal to their query are dropped."""
    n = min(round(len(pairs) * share), len(pairs))
    if n <= 0:
        return []
    rng = np.random.default_rng([_AUG_STREAM, seed])
    picked = np.sort(rng.choice(len(pairs), size=n, replace=False))
    out = []
    for k in picked.tolist():
        query, item = pairs[k]
        new = rewrite_query(query, rng)
        if new != query:
            out.append((new, item))
    return out


def curriculum_parts(parts: Sequence[Samples], epoch: int, epochs: int) -> list[Samples]:
    """The ``parts`` an ``epoch`` (0-based, of ``epochs``) trains under the curriculum: those whose
    level ranks, among the levels present (non-empty parts), at most
    :func:`~tandem.training.curriculum.max_level` — so a missing level (no spans, no rewrites)
    does not cost an epoch that opens nothing."""
    present = sorted({LEVEL[p.source] for p in parts if len(p)})
    if not present:
        return list(parts)
    top = present[max_level(epoch, epochs, len(present))]
    return [p for p in parts if LEVEL[p.source] <= top]


def _rms(x: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Root mean square of ``x`` (over the unpadded rows of ``mask`` when given)."""
    sq = x.detach().float().pow(2)
    if mask is None:
        return float(sq.mean().sqrt())
    m = mask.to(sq.dtype).unsqueeze(-1)
    return float(((sq * m).sum() / (m.sum() * x.shape[-1]).clamp(min=1)).sqrt())


def fgsm_tree_loss(model: TreeDecoder, tables: list[torch.Tensor], q: torch.Tensor, st: torch.Tensor,
                   mk: torch.Tensor, path: torch.Tensor, *, beam: int, epsilon: float) -> torch.Tensor:
    """``(L(x) + L(x + δ)) / 2`` of :func:`~tandem.generative.tree_model.tree_loss` on cached
    states ``st`` (mask ``mk``) and pooled queries ``q``, ``δ = ε·rms(x)·sign(∇_x L)``; the
    plain loss at ``epsilon`` 0. ``∇_x`` comes from :func:`torch.autograd.grad` (parameters get
    no gradient from it) and the perturbed inputs are detached, so the caller's ``backward``
    reaches the parameters once through each term."""
    if epsilon <= 0:
        return tree_loss(model, tables, q, st, mk, path, beam=beam)
    st = st.detach().requires_grad_(True)
    q = q.detach().requires_grad_(True)
    clean = tree_loss(model, tables, q, st, mk, path, beam=beam)
    g_st, g_q = torch.autograd.grad(clean, [st, q], retain_graph=True)
    adv_st = (st + fgsm_delta(g_st, epsilon * _rms(st, mk), mk)).detach()
    adv_q = (q + fgsm_delta(g_q, epsilon * _rms(q))).detach()
    return (clean + tree_loss(model, tables, adv_q, adv_st, mk, path, beam=beam)) / 2
