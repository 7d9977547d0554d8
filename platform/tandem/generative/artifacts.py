"""The on-disk form of a trained generative retriever, and the only way to load one.

A model folder holds ``model.safetensors`` + ``config.json`` (transformers), the tokenizer
files, the semantic-ID map and ``manifest.json``. The manifest records the format version,
the tokenizer's ID space, the ID-map version, the model config, the training summary and a
SHA-256 of every file. Loading verifies each checksum before anything is parsed and refuses
pickle-based weights, so a truncated download or a tampered folder is refused with a
message instead of crashing (or executing code) deep inside ``torch.load``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tandem.errors import CorruptArtifact
from tandem.generative.model import refuse_pickles
from tandem.versioned import MANIFEST, file_checksums, read_versioned_manifest, verify_checksums

if TYPE_CHECKING:
    from transformers import T5ForConditionalGeneration

    from tandem.generative.tokenizer import TandemTokenizer

log = logging.getLogger(__name__)

FORMAT = "tandem.generative"
#: major.minor: a reader accepts any minor of its major (unknown keys dropped with a warning).
FORMAT_VERSION = "1.0"
IDMAP_DIR = "idmap"
_KNOWN_KEYS = {"format", "format_version", "created_utc", "tokenizer", "id_map", "model", "max_input_length",
               "training", "files"}


@dataclass
class GenerativeArtifact:
    """A loaded model folder: model, tokenizer, ID map and manifest."""

    model: T5ForConditionalGeneration
    tokenizer: TandemTokenizer
    id_map: Any
    manifest: dict[str, Any] = field(default_factory=dict)
    adapter_manifest: dict[str, Any] | None = None
    """The merged adapter's manifest (``None`` for a base model alone)."""

    @property
    def max_input_length(self) -> int:
        """Longest encoder input in tokens (EOS included); longer queries are truncated."""
        return int(self.manifest["max_input_length"])


def save_artifact(
    directory: Path,
    model: T5ForConditionalGeneration,
    tokenizer: TandemTokenizer,
    id_map: Any,
    *,
    max_input_length: int,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a complete model folder (see module docstring) and return its manifest path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save(directory)
    id_map.save(str(directory / IDMAP_DIR))
    files = file_checksums(directory, [*directory.iterdir(), *(directory / IDMAP_DIR).iterdir()])
    cfg = model.config
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tokenizer": {
            "kind": "byte-level BPE + reserved tokens",
            "vocab_size": len(tokenizer),
            "id_space": list(tokenizer.id_space),
            "task_tokens": dict(tokenizer.task_ids),
        },
        "id_map": {"path": IDMAP_DIR, "version": str(getattr(id_map, "version", "")), "items": len(id_map)},
        "model": {k: getattr(cfg, k) for k in ("model_type", "vocab_size", "d_model", "d_ff", "num_layers",
                                                "num_decoder_layers", "num_heads", "d_kv")},
        "max_input_length": int(max_input_length),
        "training": training or {},
        "files": files,
    }
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return path


def read_manifest(directory: Path) -> dict[str, Any]:
    """Parse and version-check ``manifest.json`` of a model folder."""
    return read_versioned_manifest(directory, fmt=FORMAT, fmt_version=FORMAT_VERSION, known_keys=_KNOWN_KEYS,
                                   what="generative model")


def verify_files(directory: Path, manifest: dict[str, Any], required: str = "model.safetensors") -> None:
    """Check every file the manifest lists against its SHA-256; refuse pickles.

    ``required`` is the weights file the manifest must list (an adapter folder's differs).
    """
    directory = Path(directory)
    refuse_pickles(directory)
    verify_checksums(directory, manifest.get("files"), required)


def load_artifact(directory: Path, device: Any = "cpu") -> GenerativeArtifact:
    """Verify and load a model folder written by :func:`save_artifact` (never unpickles).

    An hourly adapter is merged in afterwards by
    :func:`tandem.generative.adapter_artifact.attach_adapter` (which depends on this module,
    not the other way round).
    """
    from transformers import T5ForConditionalGeneration

    from tandem.generative.idmap import load_id_map
    from tandem.generative.tokenizer import TandemTokenizer

    directory = Path(directory)
    manifest = read_manifest(directory)
    verify_files(directory, manifest)
    tokenizer = TandemTokenizer.load(directory, manifest["tokenizer"]["id_space"])
    try:
        model = T5ForConditionalGeneration.from_pretrained(str(directory), use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as exc:  # checksums passed, so the writer was faulty
        raise CorruptArtifact(f"cannot load the model in {directory}: {exc}") from None
    if model.config.vocab_size != len(tokenizer):
        raise CorruptArtifact(
            f"model vocabulary ({model.config.vocab_size}) does not match the tokenizer ({len(tokenizer)})"
        )
    id_map = load_id_map(directory / manifest["id_map"]["path"])
    artifact = GenerativeArtifact(model=model, tokenizer=tokenizer, id_map=id_map, manifest=manifest)
    artifact.model.to(device).eval()
    return artifact
