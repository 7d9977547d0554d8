"""Epoch-boundary checkpoints for resuming a training run, pickle-free.

A checkpoint is a folder with the model (safetensors), the tokenizer, the optimiser's
tensors (safetensors) and ``state.json`` (where the run stands, its history and config).
Resuming needs no RNG state: every epoch reseeds from ``(seed, stage, epoch)``, so the run
continues exactly as an uninterrupted one would have (up to nondeterministic kernels).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tandem.errors import CorruptArtifact

if TYPE_CHECKING:
    import torch
    from transformers import T5ForConditionalGeneration

    from tandem.generative.tokenizer import TandemTokenizer

CHECKPOINT_DIR = "checkpoint"
"""The checkpoint folder inside a training run's output folder (left out of published models)."""
STATE = "state.json"
OPTIMIZER = "optimizer.safetensors"
MODEL = "model.safetensors"


def save_checkpoint(
    directory: Path,
    model: T5ForConditionalGeneration,
    tokenizer: TandemTokenizer,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
) -> None:
    """Write a checkpoint atomically: into a sibling temp folder, then renamed over the old one."""
    from safetensors.torch import save_file, save_model

    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.config.to_json_file(str(tmp / "config.json"))
    save_model(model, str(tmp / MODEL))  # handles the tied input/output embeddings
    tokenizer.save(tmp)
    groups: list[dict[str, Any]] = []
    if optimizer is not None:
        tensors: dict[str, torch.Tensor] = {}
        for idx, pstate in optimizer.state_dict()["state"].items():
            for key, value in pstate.items():
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
        save_file(tensors, str(tmp / OPTIMIZER))
        groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.state_dict()["param_groups"]]
    (tmp / STATE).write_text(json.dumps({**state, "optimizer_groups": groups}, default=str))
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old.exists():
        shutil.rmtree(old)


def read_state(directory: Path) -> dict[str, Any] | None:
    """The ``state.json`` of a checkpoint, or ``None`` when there is no checkpoint."""
    path = Path(directory) / STATE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CorruptArtifact(f"checkpoint state {path} is not valid JSON: {exc}") from None


def load_optimizer(directory: Path, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Restore ``optimizer`` (built over the same parameters) from a checkpoint."""
    from safetensors.torch import load_file

    path = Path(directory) / OPTIMIZER
    if not path.is_file():
        return
    tensors = load_file(str(path))
    per_param: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        per_param.setdefault(int(idx), {})[key] = value
    sd = optimizer.state_dict()
    groups = state.get("optimizer_groups") or []
    if len(groups) != len(sd["param_groups"]):
        raise CorruptArtifact(f"checkpoint {directory} has an optimiser for a different model")
    for saved, live in zip(groups, sd["param_groups"], strict=True):
        live.update(saved)
    sd["state"] = per_param
    optimizer.load_state_dict(sd)


def load_model(directory: Path) -> T5ForConditionalGeneration:
    """The model of a checkpoint (config JSON + safetensors weights)."""
    from safetensors.torch import load_model as load_weights
    from transformers import T5Config, T5ForConditionalGeneration

    directory = Path(directory)
    try:
        model = T5ForConditionalGeneration(T5Config.from_json_file(str(directory / "config.json")))
        load_weights(model, str(directory / MODEL))
    except (OSError, ValueError, RuntimeError) as exc:
        raise CorruptArtifact(f"checkpoint {directory} cannot be loaded: {exc}") from None
    return model
