"""Building the seq2seq model: T5 from a size preset (from scratch) or from a local checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from tandem.errors import CorruptArtifact, InvalidInput

if TYPE_CHECKING:
    import torch
    from transformers import T5ForConditionalGeneration

    from tandem.generative.tokenizer import TandemTokenizer


class ModelSize(BaseModel):
    """Size of a from-scratch T5. Defaults are the ``ci`` preset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    d_model: int = Field(default=128, ge=16)
    """Hidden size."""
    d_ff: int = Field(default=512, ge=16)
    """Feed-forward inner size."""
    num_layers: int = Field(default=2, ge=1)
    """Encoder layers."""
    num_decoder_layers: int = Field(default=2, ge=1)
    """Decoder layers; IDs are short, so the decoder can be shallower than the encoder."""
    num_heads: int = Field(default=4, ge=1)
    """Attention heads; ``d_kv = d_model // num_heads``."""
    dropout_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout; memorisation wants none, so 0 is the default."""


#: Size presets per profile. ``ci`` trains a few hundred items in well under a minute on two
#: cores; ``full`` is the largest that BENCHMARK.md measures at a practical speed on CPU.
SIZE_PRESETS: dict[str, ModelSize] = {
    "ci": ModelSize(),
    "full": ModelSize(d_model=256, d_ff=1024, num_layers=4, num_decoder_layers=2, num_heads=4),
}


def pick_device(setting: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    import torch

    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(setting)
    except RuntimeError as exc:
        raise InvalidInput(f"`device` {setting!r} is not a torch device: {exc}") from None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_bf16(precision: str, device: torch.device) -> bool:
    """Resolve a ``precision`` setting (``auto``/``bf16``/``fp32``) to "autocast to bf16?"."""
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def build_model(size: ModelSize, tokenizer: TandemTokenizer, max_length: int) -> T5ForConditionalGeneration:
    """A randomly initialised T5 whose vocabulary is exactly ``tokenizer``'s."""
    from transformers import T5Config, T5ForConditionalGeneration

    if size.d_model % size.num_heads:
        raise InvalidInput(f"`d_model` ({size.d_model}) must be divisible by `num_heads` ({size.num_heads})")
    config = T5Config(  # type: ignore[call-arg]  # transformers stub omits the PretrainedConfig **kwargs
        vocab_size=len(tokenizer),
        d_model=size.d_model,
        d_kv=size.d_model // size.num_heads,
        d_ff=size.d_ff,
        num_layers=size.num_layers,
        num_decoder_layers=size.num_decoder_layers,
        num_heads=size.num_heads,
        dropout_rate=size.dropout_rate,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_id,
        eos_token_id=tokenizer.eos_id,
        decoder_start_token_id=tokenizer.pad_id,
        n_positions=max_length,
    )
    return T5ForConditionalGeneration(config)


def load_pretrained(path: Path, tokenizer: TandemTokenizer) -> T5ForConditionalGeneration:
    """A T5 checkpoint from a local folder (safetensors only), resized to ``tokenizer``.

    Used to start from a pretrained model instead of stage-1 denoising. The new reserved
    tokens get freshly initialised embedding rows; the checkpoint's own vocabulary is kept
    only where ``tokenizer`` reuses its ids, so pass the tokenizer shipped with it extended
    by :func:`~tandem.generative.tokenizer.reserved_tokens` when the text pieces matter.
    """
    from transformers import T5ForConditionalGeneration

    path = Path(path)
    refuse_pickles(path)
    if not any(path.glob("*.safetensors")):
        raise InvalidInput(f"`pretrained` folder {path} has no *.safetensors weights")
    model = T5ForConditionalGeneration.from_pretrained(str(path), use_safetensors=True)
    if model.config.vocab_size != len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_id
    model.config.eos_token_id = tokenizer.eos_id
    model.config.decoder_start_token_id = tokenizer.pad_id
    return model


#: File suffixes that would be unpickled by torch/transformers; never loaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def refuse_pickles(path: Path) -> None:
    """Raise :class:`CorruptArtifact` when ``path`` holds pickle-based weight files."""
    found = sorted(p.name for p in Path(path).iterdir() if p.suffix in PICKLE_SUFFIXES)
    if found:
        raise CorruptArtifact(f"{path} holds pickle-based files {found}; Tandem loads safetensors only")


def count_parameters(model: Any) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log p(target | source)`` per row: the sum of the target tokens' log-probabilities.

    Summed, not averaged: every semantic ID has the same length, and the sum is the score
    constrained decoding ranks by. ``-100`` labels (padding) contribute nothing.
    """
    import torch

    mask = labels != -100
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, labels.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(1)
