"""Curriculum for alignment (seed chapter, section 5.3.4): easy→hard levels and
accuracy-adaptive sampling.

Levels of a query→id example, easiest first (``Example.level``):

0. exact-match: the item's own title as the query (what doc→id already taught);
1. templated: a template pseudo-query (head noun, brand + type ...);
2. real: a logged/judged query;
3. rewritten: an augmented copy of a query (typos, dropped or swapped words).

:func:`max_level` opens one more level per epoch and every level in the last epoch, so
the final epochs train on the full mix. :func:`adaptive_probabilities` implements
``p(sample) ∝ exp(−α·accuracy)``: examples the model already gets right are drawn less.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tandem.errors import InvalidInput
from tandem.training.objectives import Example

if TYPE_CHECKING:
    import torch

    from tandem.generative.tokenizer import TandemTokenizer

LEVELS = ("exact", "template", "real", "rewritten")


def max_level(epoch: int, epochs: int, n_levels: int = len(LEVELS)) -> int:
    """Highest level trained in ``epoch`` (0-based) of ``epochs``: one more per epoch, all in the last."""
    if epochs < 1 or not 0 <= epoch < epochs:
        raise InvalidInput(f"`epoch` must be in [0, {epochs}), got {epoch}")
    if epoch == epochs - 1:
        return n_levels - 1
    return min(epoch, n_levels - 1)


def curriculum_order(levels: Sequence[int], epoch: int, epochs: int) -> np.ndarray:
    """Indices of the examples trained in ``epoch``: levels up to :func:`max_level`, easiest first.

    When no example is that easy (e.g. no exact-match queries), the lowest present level is
    used, so an epoch never trains nothing. The caller shuffles within the epoch if wanted;
    this order is stable (by level, then position).
    """
    lv = np.asarray(levels, dtype=np.int64)
    if lv.size == 0:
        return np.zeros(0, dtype=np.int64)
    top = max(max_level(epoch, epochs), int(lv.min()))
    keep = np.flatnonzero(lv <= top)
    return keep[np.argsort(lv[keep], kind="stable")]


def adaptive_probabilities(accuracy: np.ndarray, alpha: float) -> np.ndarray:
    """``p_i ∝ exp(−α·accuracy_i)``, normalised; ``alpha = 0`` is uniform."""
    if alpha < 0:
        raise InvalidInput(f"`alpha` must be >= 0, got {alpha}")
    acc = np.asarray(accuracy, dtype=np.float64)
    if acc.size == 0:
        return acc
    if np.any((acc < 0) | (acc > 1)):
        raise InvalidInput("`accuracy` values must be in [0, 1]")
    logits = -alpha * acc
    w = np.exp(logits - logits.max())  # shift for stability; cancels in the normalisation
    return w / w.sum()


def adaptive_sample(accuracy: np.ndarray, alpha: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` example indices drawn with replacement from :func:`adaptive_probabilities`."""
    p = adaptive_probabilities(accuracy, alpha)
    if p.size == 0:
        return np.zeros(0, dtype=np.int64)
    return rng.choice(p.size, size=size, replace=True, p=p)


def example_accuracy(model: torch.nn.Module, tokenizer: TandemTokenizer, examples: Sequence[Example],
                     device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Per-example accuracy in [0, 1]: share of ID positions greedy decoding gets right
    before its first error (teacher-forced, each position restricted to its ID tokens;
    the same measurement as :mod:`tandem.training.verify`, kept per example)."""
    import torch

    from tandem.training.data import collate

    length = tokenizer.id_length
    allowed = torch.as_tensor(tokenizer.id_table, device=device)
    cand = allowed.clamp(min=0)
    out = np.zeros(len(examples), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(examples), batch_size):
                chunk = examples[start : start + batch_size]
                batch = collate(chunk, tokenizer.pad_id, device)
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               decoder_input_ids=batch["decoder_input_ids"][:, :length]).logits.float()
                scores = torch.gather(logits, 2, cand.unsqueeze(0).expand(len(chunk), -1, -1))
                scores = scores.masked_fill(allowed.unsqueeze(0) < 0, float("-inf"))
                pred = torch.gather(cand.unsqueeze(0).expand(len(chunk), -1, -1), 2,
                                    scores.argmax(2, keepdim=True)).squeeze(2)
                ok = (pred == batch["labels"][:, :length]).long().cumprod(1).sum(1)
                out[start : start + len(chunk)] = ok.cpu().numpy() / length
    finally:
        model.train(was_training)
    return out
