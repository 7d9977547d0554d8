"""Parameter-efficient fine-tuning of the generative T5 through ``peft`` (seed chapter, 5.1.3).

Three methods, one spec (:class:`PeftSpec`):

* ``lora`` — low-rank updates ``W + (α/r)·B·A`` on the chosen linear layers. Mergeable into
  the base weights, so serving pays nothing at inference time (the chapter's choice for
  large deployments and what the hourly adapter uses).
* ``prefix`` — prefix tuning: learned key/value vectors prepended in every layer. Trains
  the fewest parameters but cannot be merged; our vectorised constrained decoder drives the
  T5 decoder directly, so prefix adapters are for training studies, not for serving.
* ``ia3`` — (IA)³, the closest thing ``peft`` offers to a bottleneck adapter. ``peft`` has
  no Houlsby ``W_up·ReLU(W_down·h)`` module (that lives in AdapterHub's ``adapters``
  package); IA³ is likewise a small module per layer on attention and the feed-forward
  block, learned rescaling vectors of keys, values and the FF activation, and unlike a
  bottleneck adapter it merges into the weights (no extra latency). A LoRA on ``wi``/``wo``
  only is the other near-equivalent (a *parallel* adapter without the non-linearity).

Adapters are saved pickle-free: ``adapter.safetensors`` (only the adapter's tensors, a few
hundred kB) and ``adapter.json`` (format version + the spec). Loading rebuilds the peft
wrapper from the spec and fills it from the safetensors file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tandem.errors import CorruptArtifact, InvalidInput

if TYPE_CHECKING:
    import torch

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
        return LoraConfig(task_type=task, r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
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


def trainable_parameters(model: torch.nn.Module) -> dict[str, int | float]:
    """``trainable`` and ``total`` parameter counts (tied weights once) and their ratio."""
    seen: dict[int, Any] = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return {"trainable": trainable, "total": total, "trainable_share": round(trainable / max(total, 1), 6)}


def merge(peft_model: Any) -> torch.nn.Module:
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


def save_adapter(peft_model: Any, spec: PeftSpec, directory: Path) -> list[Path]:
    """Write the adapter's tensors (safetensors) and ``adapter.json``; returns the two paths."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    weights = directory / ADAPTER_WEIGHTS
    save_file(tensors, str(weights))
    config = directory / ADAPTER_CONFIG
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "spec": spec.model_dump(mode="json"),
            "parameters": trainable_parameters(peft_model)}
    config.write_text(json.dumps(body, indent=2, sort_keys=True))
    return [weights, config]


def read_spec(directory: Path) -> PeftSpec:
    """The :class:`PeftSpec` stored in ``directory/adapter.json`` (format-checked)."""
    from tandem.generative.artifacts import read_versioned_json

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
