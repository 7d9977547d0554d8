"""The v1 T5 trainer's loss of one batch: the multi-task loss plus, in query→id stages, the
FGSM / gradient-norm and ranking terms the configuration turns on (sections 5.3–5.4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tandem.training.config import TrainConfig
from tandem.training.objectives import Example, Task, multitask_loss
from tandem.training.t5_data import T5Data

#: In-batch negatives per example: each costs a decoder pass, and a batch of 64 would give 63.
IN_BATCH_CAP = 8


def batch_loss(model: Any, data: T5Data, batch: Sequence[Example], inputs: dict[str, Any],
               weights: Mapping[Task, float], *, aligned: bool, step: int, rng: np.random.Generator,
               device_type: str, bf16: bool) -> tuple[Any, dict[str, float]]:
    """The loss of ``batch`` and its named parts (unweighted, for the curves); ``aligned``:
    a query→id stage, where the robust and ranking terms apply."""
    import torch

    from tandem.training.adversarial import robust_loss

    cfg = data.config
    seen: dict[str, Any] = {}

    def loss_fn(logits: Any) -> Any:
        loss, parts = multitask_loss(logits, inputs["labels"], inputs["tasks"], weights)
        seen.setdefault("logits", logits)  # the clean pass comes first
        seen.setdefault("parts", parts)
        return loss

    eps = cfg.fgsm_epsilon if aligned and step % cfg.fgsm_every == 0 else 0.0
    gn = cfg.grad_norm_weight if aligned else 0.0
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        if eps or gn:
            loss, rp = robust_loss(model, inputs, loss_fn, epsilon=eps, adv_weight=cfg.fgsm_weight,
                                   grad_norm_weight=gn)
        else:
            loss, rp = loss_fn(model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                     decoder_input_ids=inputs["decoder_input_ids"]).logits), None
        parts = {t.name.lower(): v for t, v in seen["parts"].items()}
        if rp is not None and rp.adversarial is not None:
            parts["adversarial"] = rp.adversarial
        if rp is not None and rp.grad_norm is not None:
            parts["grad_norm"] = rp.grad_norm
        if aligned and cfg.rank_loss != "none":
            rank, rank_parts = _rank_loss(model, data, cfg, batch, inputs, seen["logits"], rng)
            loss = loss + rank
            parts.update(rank_parts)
    return loss, parts


def _rank_loss(model: Any, data: T5Data, cfg: TrainConfig, batch: Sequence[Example], inputs: dict[str, Any],
               logits: Any, rng: np.random.Generator) -> tuple[Any, dict[str, float]]:
    """``λ_hard·L_hard + λ_random·L_random + λ_in_batch·L_in_batch`` over the batch's query→id rows."""
    from tandem.training.negatives import in_batch_negatives, random_negatives, ranking_terms

    rows = [i for i, e in enumerate(batch) if e.task == Task.Q2ID]
    pos_sets = [data.groups.positives[batch[i].group] for i in rows]
    kinds: list[tuple[str, float, list[list[int]]]] = []
    if cfg.hard_negatives:
        kinds.append(("hard", cfg.lambda_hard, [list(batch[i].hard[: cfg.hard_negatives]) for i in rows]))
    if cfg.random_negatives:
        kinds.append(("random", cfg.lambda_random,
                      [random_negatives(len(data.items), p, cfg.random_negatives, rng) for p in pos_sets]))
    if cfg.in_batch_negatives:
        inb = in_batch_negatives([batch[i].item for i in rows], pos_sets)
        kinds.append(("in_batch", cfg.lambda_in_batch, [n[:IN_BATCH_CAP] for n in inb]))
    return ranking_terms(model, inputs, logits, rows, kinds, data.target_ids, data.tokenizer.pad_id,
                         cfg.rank_loss, cfg.rank_margin)
