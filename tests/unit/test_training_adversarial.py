"""FGSM raises the loss at the perturbed point; gradient-norm regularisation adds ‖∇x L‖²."""

from __future__ import annotations

import pytest
import torch

from tandem.errors import InvalidInput
from tandem.training.adversarial import fgsm_delta, robust_loss


@pytest.fixture(scope="module")
def setup() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = T5Config(vocab_size=50, d_model=16, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8,
                   dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = T5ForConditionalGeneration(cfg)
    input_ids = torch.randint(2, 50, (4, 6))
    input_ids[0, 4:] = 0  # padding
    labels = torch.randint(2, 50, (4, 3))
    inputs = {"input_ids": input_ids, "attention_mask": (input_ids != 0).long(),
              "decoder_input_ids": torch.cat([torch.zeros(4, 1, dtype=torch.long), labels[:, :-1]], 1),
              "labels": labels}
    return model, inputs


def _loss_fn(labels: torch.Tensor):  # type: ignore[no-untyped-def]
    return lambda logits: torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels)


def test_fgsm_raises_the_loss_at_the_perturbed_point(setup: tuple[torch.nn.Module, dict[str, torch.Tensor]]) -> None:
    model, inputs = setup
    fn = _loss_fn(inputs["labels"])
    for eps in (1e-3, 1e-2, 5e-2):
        total, parts = robust_loss(model, inputs, fn, epsilon=eps, adv_weight=1.0)
        assert parts.adversarial is not None
        assert parts.adversarial > parts.clean  # the sign of the gradient goes uphill
        assert total.item() == pytest.approx(parts.clean + parts.adversarial, rel=1e-5)
    # A random-sign step of the same size raises it less than FGSM does.
    emb = model.get_input_embeddings()(inputs["input_ids"]).detach()
    gen = torch.Generator().manual_seed(0)
    rand = 5e-2 * (torch.randint(0, 2, emb.shape, generator=gen) * 2 - 1)
    with torch.no_grad():
        rand_loss = fn(model(inputs_embeds=emb + rand, attention_mask=inputs["attention_mask"],
                             decoder_input_ids=inputs["decoder_input_ids"]).logits).item()
    _, parts = robust_loss(model, inputs, fn, epsilon=5e-2)
    assert parts.adversarial is not None and parts.adversarial > rand_loss


def test_clean_only_and_padding(setup: tuple[torch.nn.Module, dict[str, torch.Tensor]]) -> None:
    model, inputs = setup
    fn = _loss_fn(inputs["labels"])
    total, parts = robust_loss(model, inputs, fn)
    ref = fn(model(**{k: v for k, v in inputs.items() if k != "labels"}).logits)
    assert total.item() == pytest.approx(ref.item(), rel=1e-5) and parts.adversarial is None
    delta = fgsm_delta(torch.ones(2, 3, 4), 0.1, torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert delta[0, 2].abs().sum() == 0 and delta[1, 1:].abs().sum() == 0 and delta[0, 0, 0] == pytest.approx(0.1)
    with pytest.raises(InvalidInput):
        robust_loss(model, inputs, fn, epsilon=-1)


def test_grad_norm_term_trains_and_backpropagates(setup: tuple[torch.nn.Module, dict[str, torch.Tensor]]) -> None:
    model, inputs = setup
    fn = _loss_fn(inputs["labels"])
    model.zero_grad()
    total, parts = robust_loss(model, inputs, fn, grad_norm_weight=10.0)
    assert parts.grad_norm is not None and parts.grad_norm > 0
    assert total.item() == pytest.approx(parts.clean + 10.0 * parts.grad_norm, rel=1e-5)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
