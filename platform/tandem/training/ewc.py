"""Elastic weight consolidation for LoRA adapters (seed chapter, section 5.2.4).

EWC adds ``λ Σ_i F_i (θ_i − θ*_i)²`` to the loss: parameters that mattered for the old
items (high diagonal Fisher ``F_i`` under the base model ``θ*``) are held close to their
old values. With LoRA the base weights never change; the *effective* weight of a wrapped
layer is ``W* + ΔW`` with ``ΔW = (α/r)·B·A``, so ``θ − θ* = ΔW`` and the penalty is

    λ Σ_layers Σ_ij F_ij · ΔW_ij²

with ``F`` the diagonal Fisher of the base layer's weight ``W*``. That is the textbook
penalty on the function the adapter actually changes, not on the (meaningless) distance
of ``A`` and ``B`` from their random initialisation.

The Fisher is the empirical one: the mean over old-item examples of the squared gradient
of that example's loss, computed one example at a time (a batch gradient squared is not a
Fisher: cross terms between examples would cancel). It is rescaled to mean 1 over all
entries, so ``λ`` reads the same across model sizes: ``λ = 1`` weighs the penalty like an
unweighted squared change of every entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from tandem.errors import InvalidInput
from tandem.training.data import collate
from tandem.training.objectives import Example, Task, multitask_loss

if TYPE_CHECKING:
    import torch

#: The loss whose Fisher is taken: old items' doc→id and query→id, equally weighted.
FISHER_WEIGHTS = {Task.DOC2ID: 1.0, Task.Q2ID: 1.0}


def fisher_diagonal(model: torch.nn.Module, examples: Sequence[Example], pad_id: int, device: torch.device,
                    modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of the weights of every linear layer named in ``modules``.

    ``model`` is the plain base model (before any adapter is attached); ``modules`` are T5
    layer names (``q``, ``v``, ``wo``...). Returns ``{"encoder.block.0....q.weight": F}``
    with ``F`` normalised to mean 1 across all returned entries.
    """
    import torch

    if not examples:
        raise InvalidInput("`fisher_samples`: no old-item examples to estimate the Fisher information from")
    wanted = set(modules)
    params = {name: p for name, p in model.named_parameters()
              if name.endswith(".weight") and name.rsplit(".", 2)[-2] in wanted}
    if not params:
        raise InvalidInput(f"`target_modules` {sorted(wanted)} name no layer of this model")
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(name in params)
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    was_training = model.training
    model.eval()  # the Fisher of the function being served: no dropout
    try:
        for ex in examples:
            batch = collate([ex], pad_id, device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           decoder_input_ids=batch["decoder_input_ids"]).logits
            loss, _ = multitask_loss(logits, batch["labels"], batch["tasks"], FISHER_WEIGHTS)
            model.zero_grad(set_to_none=True)
            loss.backward()
            for name, p in params.items():
                if p.grad is not None:
                    fisher[name] += p.grad.detach().float() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
        model.train(was_training)
    n_entries = sum(f.numel() for f in fisher.values())
    mean = sum(float(f.sum()) for f in fisher.values()) / max(n_entries, 1)
    if mean <= 0:
        raise InvalidInput("the Fisher information is zero on the old items: the base model has no gradient there")
    return {name: f / mean for name, f in fisher.items()}


class LoraEWC:
    """The penalty above for a LoRA-wrapped model, over the layers ``fisher`` covers."""

    def __init__(self, peft_model: Any, fisher: dict[str, torch.Tensor], strength: float) -> None:
        from peft.tuners.lora import LoraLayer

        if strength < 0:
            raise InvalidInput(f"`ewc_lambda` must be >= 0, got {strength}")
        self.strength = float(strength)
        self.adapter = peft_model.active_adapter
        self.pairs: list[tuple[Any, torch.Tensor]] = []
        for name, module in peft_model.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            key = _base_name(name) + ".weight"
            if key in fisher:
                weight = cast("torch.Tensor", module.base_layer.weight)  # a LoRA layer wraps a Linear/Conv base
                self.pairs.append((module, fisher[key].to(weight.device)))
        if not self.pairs:
            raise InvalidInput("`ewc_lambda` > 0 but no LoRA layer has a Fisher estimate (different target modules?)")

    def penalty(self) -> torch.Tensor:
        """``λ Σ F ⊙ ΔW²`` (differentiable w.r.t. the LoRA weights)."""
        total = None
        for module, f in self.pairs:
            delta = module.get_delta_weight(self.adapter).float()
            term = (f * delta.pow(2)).sum()
            total = term if total is None else total + term
        assert total is not None  # pairs is non-empty by construction
        return self.strength * total


def _base_name(peft_name: str) -> str:
    """``base_model.model.encoder.block.0...q`` → ``encoder.block.0...q`` (the plain model's name)."""
    prefix = "base_model.model."
    return peft_name[len(prefix):] if peft_name.startswith(prefix) else peft_name
