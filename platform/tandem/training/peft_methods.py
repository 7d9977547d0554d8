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
wrapper from the spec and fills it from the safetensors file. The reading side (spec,
wrapping, loading, merging) lives in :mod:`tandem.generative.peft_adapters`, so serving
never imports training; this module adds saving and re-exports those names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tandem.generative.peft_adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    FORMAT,
    FORMAT_VERSION,
    T5_LINEAR,
    PeftSpec,
    apply_peft,
    load_adapter,
    merge,
    peft_config,
    read_spec,
)

if TYPE_CHECKING:
    import torch

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "FORMAT", "FORMAT_VERSION", "T5_LINEAR", "PeftSpec", "apply_peft",
           "load_adapter", "merge", "peft_config", "read_spec", "save_adapter", "trainable_parameters"]


def trainable_parameters(model: torch.nn.Module) -> dict[str, int | float]:
    """``trainable`` and ``total`` parameter counts (tied weights once) and their ratio."""
    seen: dict[int, Any] = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return {"trainable": trainable, "total": total, "trainable_share": round(trainable / max(total, 1), 6)}


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
