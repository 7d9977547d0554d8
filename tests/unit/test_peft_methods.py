"""PEFT on the generative T5: LoRA merge equivalence, trainable counts, pickle-free round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tandem.errors import CorruptArtifact, InvalidInput  # noqa: E402
from tandem.training.peft_methods import (  # noqa: E402
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    PeftSpec,
    apply_peft,
    load_adapter,
    merge,
    save_adapter,
    trainable_parameters,
)

D_MODEL, D_FF, VOCAB, LAYERS = 32, 64, 300, 1


def _t5(seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=VOCAB, d_model=D_MODEL, d_kv=16, d_ff=D_FF, num_layers=LAYERS,
                   num_decoder_layers=LAYERS, num_heads=2, feed_forward_proj="relu", dropout_rate=0.0,
                   tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5ForConditionalGeneration(cfg).eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(3, VOCAB, (3, 9), generator=g)
    return {"input_ids": x, "attention_mask": torch.ones_like(x),
            "decoder_input_ids": torch.randint(3, VOCAB, (3, 4), generator=g)}


def _perturb(peft_model) -> None:
    """LoRA starts as the identity (B = 0); give the adapter weights a non-zero update."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if "ia3_" in name else 0.0))


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_merged_equals_unmerged(method: str) -> None:
    torch.set_num_threads(1)
    model = apply_peft(_t5(), PeftSpec(method=method, rank=4, alpha=8))
    _perturb(model)
    base_out = _t5()(**_inputs()).logits
    with torch.no_grad():
        wrapped = model(**_inputs()).logits
        assert not torch.allclose(wrapped, base_out, atol=1e-3)  # the adapter really changes the function
        plain = merge(model)
        merged = plain(**_inputs()).logits
    assert not hasattr(plain, "peft_config")
    torch.testing.assert_close(merged, wrapped, atol=1e-4, rtol=1e-4)


def test_trainable_counts_match_the_method_formulas() -> None:
    total = trainable_parameters(_t5())["total"]
    rank = 4
    lora = apply_peft(_t5(), PeftSpec(method="lora", rank=rank, target_modules=("q", "v")))
    counts = trainable_parameters(lora)
    # q and v are d_model x d_model (heads * d_kv = 32); encoder self-attn, decoder self- and cross-attn.
    attn_blocks = LAYERS * 3
    assert counts["trainable"] == attn_blocks * 2 * rank * (D_MODEL + D_MODEL)
    assert counts["total"] == total + counts["trainable"]
    ffn = apply_peft(_t5(), PeftSpec(method="lora", rank=rank, target_modules=("wi", "wo")))
    assert trainable_parameters(ffn)["trainable"] == 2 * LAYERS * 2 * rank * (D_MODEL + D_FF)
    ia3 = apply_peft(_t5(), PeftSpec(method="ia3", target_modules=("k", "v", "wo"), feedforward_modules=("wo",)))
    # One vector per k/v output (d_model) and per wo input (d_ff).
    assert trainable_parameters(ia3)["trainable"] == attn_blocks * 2 * D_MODEL + 2 * LAYERS * D_FF
    prefix = apply_peft(_t5(), PeftSpec(method="prefix", num_virtual_tokens=5))
    assert 0 < trainable_parameters(prefix)["trainable"] < trainable_parameters(lora)["trainable"] * 4


@pytest.mark.parametrize("method", ["lora", "ia3", "prefix"])
def test_save_load_round_trip(method: str, tmp_path: Path) -> None:
    spec = PeftSpec(method=method, rank=4, alpha=8, dropout=0.1, num_virtual_tokens=4)
    model = apply_peft(_t5(), spec)
    _perturb(model)
    model.eval()
    paths = save_adapter(model, spec, tmp_path)
    assert sorted(p.name for p in paths) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    loaded = load_adapter(_t5(), tmp_path)
    assert loaded.tandem_spec == spec
    with torch.no_grad():
        torch.testing.assert_close(loaded(**_inputs()).logits, model(**_inputs()).logits)


def test_prefix_cannot_be_merged() -> None:
    model = apply_peft(_t5(), PeftSpec(method="prefix"))
    model.tandem_spec = PeftSpec(method="prefix")
    with pytest.raises(InvalidInput, match="`method` prefix"):
        merge(model)


def test_adapter_for_another_base_size_is_refused(tmp_path: Path) -> None:
    spec = PeftSpec(rank=2, target_modules=("q",))
    save_adapter(apply_peft(_t5(), spec), spec, tmp_path)
    from transformers import T5Config, T5ForConditionalGeneration

    other = T5ForConditionalGeneration(T5Config(vocab_size=VOCAB, d_model=48, d_kv=24, d_ff=64, num_layers=1,
                                                num_decoder_layers=1, num_heads=2))
    with pytest.raises(CorruptArtifact, match="does not fit"):
        load_adapter(other, tmp_path)


def test_bad_specs_and_configs(tmp_path: Path) -> None:
    from pydantic import ValidationError

    # InvalidInput raised in a validator reaches the caller as pydantic's ValidationError
    # (the CLI turns that into an InvalidInput naming the field).
    with pytest.raises(ValidationError, match="`target_modules`"):
        PeftSpec(target_modules=("query",))
    with pytest.raises(ValidationError, match="`feedforward_modules`"):
        PeftSpec(method="ia3", target_modules=("q",), feedforward_modules=("wo",))
    (tmp_path / ADAPTER_CONFIG).write_text(json.dumps({"format": "tandem.peft", "format_version": "2.0"}))
    with pytest.raises(CorruptArtifact, match="format_version"):
        load_adapter(_t5(), tmp_path)
    (tmp_path / ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(CorruptArtifact, match="not valid JSON"):
        load_adapter(_t5(), tmp_path)
