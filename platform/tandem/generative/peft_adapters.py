"""PEFT adapters as serving reads them: the spec, the ``peft`` wrapper, loading and merging.

The hourly adapter's on-disk form is ``adapter.safetensors`` (only the adapter's tensors)
and ``adapter.json`` (format version + :class:`PeftSpec`). Serving needs to read, wrap and
merge one, never to train it, so this lives with the generative retriever; training adds
saving and parameter counts in :mod:`tandem.training.peft_methods` (which re-exports these
names). See that module for the three methods (``lora``, ``prefix``, ``ia3``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tandem.errors import CorruptArtifact, InvalidInput
from tandem.versioned import read_versioned_json

if TYPE_CHECKING:
    import torch
    from transformers import T5ForConditionalGeneration

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
FORMAT = "tandem.peft"
#: major.minor: a reader accepts any minor of its major; spec keys it does not know (from a
#: newer minor) are dropped with a warning.
FORMAT_VERSION = "1.0"
#: Every linear layer of a T5 block: attention q/k/v/o and the feed-forward wi/wo.
T5_LINEAR = ("q", "k", "v", "o", "wi", "wo")
#: Substrings of the state-dict keys that belong to an adapter rather than the base.
_ADAPTER_TAGS = ("lora_", "ia3_", "prompt_encoder", "prompt_embeddings")


class PeftSpec(BaseModel):
    """Which PEFT method and its hyper-parameters (stored with every saved adapter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["lora", "prefix", "ia3"] = "lora"
    """``lora`` (mergeable, the default), ``prefix`` (prefix tuning) or ``ia3``."""
    rank: int = Field(default=16, ge=1)
    """LoRA rank ``r``."""
    alpha: float = Field(default=32.0, gt=0)
    """LoRA scaling numerator: the update is ``(alpha / rank)·B·A``."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """LoRA dropout on the adapter's input."""
    target_modules: tuple[str, ...] = T5_LINEAR
    """T5 linear layers the method wraps (LoRA and IA³); names as in ``T5Block``."""
    feedforward_modules: tuple[str, ...] = ("wo",)
    """IA³: which of ``target_modules`` are feed-forward (scaled on their input, not output)."""
    num_virtual_tokens: int = Field(default=8, ge=1)
    """Prefix tuning: prefix length per layer."""

    @model_validator(mode="after")
    def _check(self) -> PeftSpec:
        unknown = sorted(set(self.target_modules) - set(T5_LINEAR))
        if unknown:
            raise InvalidInput(f"`target_modules` {unknown} are not T5 linear layers; choose from {list(T5_LINEAR)}")
        if not self.target_modules:
            raise InvalidInput("`target_modules` is empty")
        if self.method == "ia3" and not set(self.feedforward_modules) <= set(self.target_modules):
            raise InvalidInput("`feedforward_modules` must be a subset of `target_modules`")
        return self

    @property
    def mergeable(self) -> bool:
        """Whether the adapter can be folded into the base weights for serving."""
        return self.method in ("lora", "ia3")


def peft_config(spec: PeftSpec) -> Any:
    """The ``peft`` config object for ``spec`` (task type seq2seq LM)."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, TaskType

    task = TaskType.SEQ_2_SEQ_LM
    if spec.method == "lora":
        return LoraConfig(task_type=task, r=spec.rank, lora_alpha=spec.alpha,  # type: ignore[arg-type]  # peft annotates int; a float alpha works (scale = alpha / r)
                          lora_dropout=spec.dropout,
                          target_modules=list(spec.target_modules), bias="none")
    if spec.method == "ia3":
        return IA3Config(task_type=task, target_modules=list(spec.target_modules),
                         feedforward_modules=list(spec.feedforward_modules))
    return PrefixTuningConfig(task_type=task, num_virtual_tokens=spec.num_virtual_tokens)


def apply_peft(model: torch.nn.Module, spec: PeftSpec) -> Any:
    """Wrap ``model`` (a T5) in a ``PeftModel``: base weights frozen, adapter trainable.

    The wrapper shares the base's parameters, so the caller's ``model`` must not be used
    for anything else afterwards (merge or unload to get a plain model back).
    """
    from peft import get_peft_model

    return get_peft_model(model, peft_config(spec))


def merge(peft_model: Any) -> T5ForConditionalGeneration:
    """Fold a LoRA/IA³ adapter into the base weights and return the plain T5.

    The merged model computes the same function as the wrapped one (up to float rounding)
    with no adapter code on the inference path.
    """
    spec = getattr(peft_model, "tandem_spec", None)
    method = spec.method if spec is not None else _method_of(peft_model)
    if method == "prefix":
        raise InvalidInput("`method` prefix cannot be merged into the base weights; serve a `lora` or `ia3` adapter")
    merged = peft_model.merge_and_unload()
    merged.eval()
    return merged


def _method_of(peft_model: Any) -> str:
    cfg = peft_model.peft_config[peft_model.active_adapter]
    return {"LORA": "lora", "IA3": "ia3", "PREFIX_TUNING": "prefix"}.get(str(cfg.peft_type.value), "unknown")


def read_spec(directory: Path) -> PeftSpec:
    """The :class:`PeftSpec` stored in ``directory/adapter.json`` (format-checked)."""
    path = Path(directory) / ADAPTER_CONFIG
    body = read_versioned_json(path, fmt=FORMAT, fmt_version=FORMAT_VERSION, what="adapter config")
    raw = dict(body.get("spec") or {})
    unknown = set(raw) - set(PeftSpec.model_fields)
    if unknown:
        log.warning("%s: ignoring unknown spec keys %s (written by a newer Tandem?)", path, sorted(unknown))
        raw = {k: v for k, v in raw.items() if k not in unknown}
    try:
        return PeftSpec.model_validate(raw)
    except (ValidationError, InvalidInput) as exc:
        raise CorruptArtifact(f"{path}: invalid adapter spec: {exc}") from None


def load_adapter(base_model: torch.nn.Module, directory: Path) -> Any:
    """Wrap ``base_model`` with the adapter saved in ``directory`` (never unpickles).

    Refuses an adapter whose tensors do not fit the base (different size or layers).
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    directory = Path(directory)
    spec = read_spec(directory)
    path = directory / ADAPTER_WEIGHTS
    if not path.is_file():
        raise CorruptArtifact(f"{directory} has no {ADAPTER_WEIGHTS}")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise CorruptArtifact(f"{path} cannot be read: {exc}") from None
    model = apply_peft(base_model, spec)
    model.tandem_spec = spec
    try:
        result = set_peft_model_state_dict(model, tensors)
    except RuntimeError as exc:  # shape mismatch: the adapter was trained on another base size
        raise CorruptArtifact(f"adapter {directory} does not fit this base model: {exc}") from None
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in getattr(result, "missing_keys", []) or [] if any(t in k for t in _ADAPTER_TAGS)]
    if spec.method == "prefix":
        # peft loads the prefix table with a strict load of its own (a misfit raises above)
        # and then reports it as both unexpected and missing in the whole-model result.
        unexpected = [k for k in unexpected if k != "prompt_embeddings"]
        missing = [k for k in missing if "prompt_encoder" not in k]
    if unexpected or missing:
        raise CorruptArtifact(f"adapter {directory} does not fit this base model "
                              f"(unexpected tensors {unexpected[:3]}, missing {missing[:3]})")
    model.eval()
    return model
