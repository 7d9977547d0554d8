"""Training objectives: doc→id, query→id, id→query and denoising, as one weighted loss.

Every example carries its task; the task's prefix token is the first encoder token, so one
model serves all directions (section 5.1.1 of the seed chapter). The loss of a batch is

    L = Σ_t w_t · mean_{examples of task t} ( mean token NLL of the example )

so a task's weight does not depend on how many of its examples a batch happens to hold,
and a long target (a query for id→query) weighs as much as a short one (an ID).
With ``w_q2id = α`` and ``w_id2q = 1 − α`` this is the chapter's bidirectional loss
``α L_q2id + (1 − α) L_id2q``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from tandem.errors import InvalidInput

if TYPE_CHECKING:
    import torch

    from tandem.generative.tokenizer import TandemTokenizer


class Task(IntEnum):
    """The objectives. Values are stable: they are stored in batches as a tensor."""

    DENOISE = 0
    DOC2ID = 1
    Q2ID = 2
    ID2Q = 3


@dataclass(frozen=True, slots=True)
class Example:
    """One seq2seq example: encoder ids (prefix included, EOS last), target ids (EOS last)."""

    task: Task
    source: tuple[int, ...]
    target: tuple[int, ...]
    item: int = -1
    """Index of the item the example is about (``-1`` when none), for exposure accounting."""
    group: int = -1
    """Query→id: index of the query text (positives are looked up per query); ``-1`` else."""
    hard: tuple[int, ...] = ()
    """Query→id: BM25-hard negative items (indices), never positives of the query."""
    level: int = 2
    """Curriculum difficulty: 0 exact-match (title), 1 templated, 2 real, 3 rewritten."""


def doc2id(tok: TandemTokenizer, text_ids: Sequence[int], codes: Sequence[int], item: int) -> Example:
    """Memorisation: item text → its semantic ID."""
    return Example(Task.DOC2ID, (tok.task_ids["doc2id"], *text_ids), (*tok.encode_id(codes), tok.eos_id), item)


def q2id(tok: TandemTokenizer, query_ids: Sequence[int], codes: Sequence[int], item: int, *, group: int = -1,
         hard: Sequence[int] = (), level: int = 2) -> Example:
    """Alignment: query → the semantic ID of a relevant item."""
    return Example(Task.Q2ID, (tok.task_ids["q2id"], *query_ids), (*tok.encode_id(codes), tok.eos_id), item,
                   group, tuple(hard), level)


def id2q(tok: TandemTokenizer, query_ids: Sequence[int], codes: Sequence[int], item: int) -> Example:
    """Bidirectional: semantic ID → a query for the item (regularises query→id)."""
    return Example(Task.ID2Q, (tok.task_ids["id2q"], *tok.encode_id(codes), tok.eos_id), tuple(query_ids), item)


def task_weights(alpha: float, doc2id_weight: float = 1.0, denoise_weight: float = 1.0) -> dict[Task, float]:
    """Weights of the multi-task loss: ``α`` for query→id and ``1 − α`` for id→query."""
    if not 0.0 <= alpha <= 1.0:
        raise InvalidInput(f"`alpha` must be in [0, 1], got {alpha}")
    if doc2id_weight < 0 or denoise_weight < 0:
        raise InvalidInput("`doc2id_weight` and `denoise_weight` must be >= 0")
    return {Task.DENOISE: denoise_weight, Task.DOC2ID: doc2id_weight, Task.Q2ID: alpha, Task.ID2Q: 1.0 - alpha}


def multitask_loss(
    logits: torch.Tensor, labels: torch.Tensor, tasks: torch.Tensor, weights: Mapping[Task, float]
) -> tuple[torch.Tensor, dict[Task, float]]:
    """The weighted loss above, and each present task's unweighted loss (for the curves).

    ``labels`` uses ``-100`` for padding, as transformers does. Computed in float32 even
    under bf16 autocast: a log-softmax over thousands of classes loses too much in bf16.
    """
    import torch
    import torch.nn.functional as F

    mask = labels != -100
    nll = F.cross_entropy(
        logits.float().transpose(1, 2), labels.masked_fill(~mask, 0), reduction="none"
    )  # [batch, length]
    per_example = (nll * mask).sum(1) / mask.sum(1).clamp(min=1)
    total = logits.new_zeros((), dtype=torch.float32)
    parts: dict[Task, float] = {}
    for task in torch.unique(tasks).tolist():
        sel = tasks == task
        task_loss = per_example[sel].mean()
        parts[Task(task)] = float(task_loss.detach())
        total = total + weights.get(Task(task), 0.0) * task_loss
    return total, parts


def ranking_loss(pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor, kind: str,
                 margin: float = 1.0) -> torch.Tensor:
    """Sequence-level ranking loss of positive vs negative ID log-probabilities.

    ``pos`` is ``[B]``, ``neg`` and ``valid`` are ``[B, n]`` (``valid`` false where a row has
    fewer negatives). ``margin``: mean over valid pairs of ``max(0, m − (s⁺ − s⁻))``;
    ``contrastive``: InfoNCE ``−log softmax([s⁺, s⁻…])₀`` averaged over rows with a negative.
    Zero (with a graph) when no row has a negative, so callers need no special case.
    """
    import torch

    if kind not in ("margin", "contrastive"):
        raise InvalidInput(f"`rank_loss` must be `margin` or `contrastive`, got {kind!r}")
    if neg.numel() == 0 or not bool(valid.any()):
        return pos.sum() * 0.0
    if kind == "margin":
        hinge = torch.relu(margin - (pos.unsqueeze(1) - neg))
        return (hinge * valid).sum() / valid.sum()
    rows = valid.any(1)
    scores = torch.cat([pos.unsqueeze(1), neg.masked_fill(~valid, float("-inf"))], dim=1)[rows]
    return -(torch.log_softmax(scores, dim=1)[:, 0]).mean()
