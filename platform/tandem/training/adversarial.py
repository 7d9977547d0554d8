"""Adversarial and regularised training (seed chapter, sections 5.4.1-5.4.2).

Both act on the encoder's input embeddings ``x`` (the text is discrete; its embedding is
where a small, worst-case change is defined):

* FGSM: ``δ = ε·sign(∇_x L)``, loss ``L(x) + λ·L(x + δ)`` — the one-step approximation of
  ``max_{‖δ‖∞ ≤ ε} L(x + δ)``; every N-th step only, to bound the extra cost;
* gradient-norm regularisation: ``L(x) + w·‖∇_x L‖²`` (double backprop), which penalises
  sensitivity to input perturbations directly.

:func:`robust_loss` computes the clean loss through ``inputs_embeds`` so the embedding
table still gets gradients from the clean and the adversarial pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tandem.errors import InvalidInput

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class RobustParts:
    """The pieces of one robust step (floats, for the curves)."""

    clean: float
    adversarial: float | None
    grad_norm: float | None


def _forward(model: torch.nn.Module, embeds: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                 decoder_input_ids=inputs["decoder_input_ids"]).logits


def fgsm_delta(grad: torch.Tensor, epsilon: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``ε·sign(grad)``, zero at padded positions (``mask`` 0) so padding stays padding."""
    delta = epsilon * grad.sign()
    if mask is not None:
        delta = delta * mask.unsqueeze(-1).to(delta.dtype)
    return delta


def robust_loss(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    epsilon: float = 0.0,
    adv_weight: float = 1.0,
    grad_norm_weight: float = 0.0,
) -> tuple[torch.Tensor, RobustParts]:
    """``L(x) [+ λ·L(x + δ_FGSM)] [+ w·‖∇_x L‖²]`` for one batch; ``loss_fn`` maps logits to L.

    ``inputs`` is a collated batch (``input_ids``, ``attention_mask``,
    ``decoder_input_ids``). With ``epsilon = 0`` and ``grad_norm_weight = 0`` this is the
    clean loss (one forward).
    """
    import torch

    if epsilon < 0 or adv_weight < 0 or grad_norm_weight < 0:
        raise InvalidInput("`epsilon`, `adv_weight` and `grad_norm_weight` must be >= 0")
    embeds = model.get_input_embeddings()(inputs["input_ids"])  # type: ignore[operator]
    if not embeds.requires_grad:  # a frozen embedding table (PEFT): ∇_x is still needed
        embeds = embeds.detach().requires_grad_(True)
    if grad_norm_weight > 0:
        # Double backprop: the fused SDPA kernels have no second derivative; the math one has.
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.MATH]):
            clean = loss_fn(_forward(model, embeds, inputs))
    else:
        clean = loss_fn(_forward(model, embeds, inputs))
    total = clean
    adv_value: float | None = None
    gn_value: float | None = None
    if epsilon > 0 or grad_norm_weight > 0:
        # create_graph only when the gradient norm itself is trained (double backprop).
        (grad,) = torch.autograd.grad(clean, embeds, retain_graph=True, create_graph=grad_norm_weight > 0)
        if grad_norm_weight > 0:
            sq = grad.pow(2).sum(dim=(1, 2)).mean()
            total = total + grad_norm_weight * sq
            gn_value = float(sq.detach())
        if epsilon > 0:
            delta = fgsm_delta(grad.detach(), epsilon, inputs["attention_mask"])
            adv = loss_fn(_forward(model, embeds + delta, inputs))
            total = total + adv_weight * adv
            adv_value = float(adv.detach())
    return total, RobustParts(float(clean.detach()), adv_value, gn_value)
