"""The on-disk form of an hourly adapter, and attaching one to its base model.

An adapter folder holds ``adapter.safetensors`` + ``adapter.json`` (the PEFT weights and
spec, see :mod:`tandem.generative.peft_adapters`), ``idmap/`` (the base's ID map extended
with the new items, placed in the reserved code space) and ``manifest.json``: format
version, the base it was trained on (the SHA-256 of the base's ``model.safetensors`` and
its ID-map version), the checks' metrics, the training summary and a SHA-256 of every file.

Attaching verifies the adapter's checksums, refuses an adapter made for another base
(weights fingerprint or ID map differ), merges the weights into the base model (no adapter
code on the inference path) and swaps in the extended ID map, from which the retriever
builds the extended trie.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from tandem.errors import CorruptArtifact, NotFound
from tandem.generative.artifacts import GenerativeArtifact, verify_files
from tandem.generative.peft_adapters import ADAPTER_WEIGHTS, PeftSpec, load_adapter, merge
from tandem.versioned import MANIFEST, file_checksums, read_versioned_manifest

log = logging.getLogger(__name__)

FORMAT = "tandem.adapter"
FORMAT_VERSION = "1.0"
IDMAP_DIR = "idmap"
_KNOWN_KEYS = {"format", "format_version", "created_utc", "base", "method", "id_map", "new_items", "metrics",
               "training", "files"}


def base_fingerprint(base_manifest: dict[str, Any]) -> str:
    """What identifies a base model's weights: the SHA-256 of its ``model.safetensors``."""
    return str(base_manifest.get("files", {}).get("model.safetensors", ""))


def finish_adapter_artifact(directory: Path, spec: PeftSpec, id_map: Any, *, base_manifest: dict[str, Any],
                            new_items: list[str], metrics: dict[str, float],
                            training: dict[str, Any] | None = None, base_ref: str = "") -> Path:
    """Add the ID map and the manifest to a folder whose adapter files are already saved.

    The adapter's weights are saved first (:func:`tandem.training.peft_methods.save_adapter`)
    because merging for the after-training checks folds the adapter away; the metrics are
    known only later.
    """
    directory = Path(directory)
    if not (directory / ADAPTER_WEIGHTS).is_file():
        raise NotFound(f"{directory} has no {ADAPTER_WEIGHTS}; save the adapter first")
    id_map.save(str(directory / IDMAP_DIR))
    files = file_checksums(directory, [*directory.iterdir(), *(directory / IDMAP_DIR).iterdir()])
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base": {"model_sha256": base_fingerprint(base_manifest),
                 "id_map_version": str(base_manifest.get("id_map", {}).get("version", "")),
                 "items": int(base_manifest.get("id_map", {}).get("items", 0)), "ref": base_ref},
        "method": spec.model_dump(mode="json"),
        "id_map": {"path": IDMAP_DIR, "version": str(getattr(id_map, "version", "")), "items": len(id_map)},
        "new_items": len(new_items),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "training": training or {},
        "files": files,
    }
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return path


def read_adapter_manifest(directory: Path) -> dict[str, Any]:
    """Parse and version-check an adapter folder's ``manifest.json``."""
    return read_versioned_manifest(directory, fmt=FORMAT, fmt_version=FORMAT_VERSION, known_keys=_KNOWN_KEYS,
                                   what="adapter")


def attach_adapter(artifact: GenerativeArtifact, directory: Path) -> GenerativeArtifact:
    """``artifact`` with the adapter in ``directory`` merged in and its extended ID map.

    Raises :class:`CorruptArtifact` when the adapter fails a checksum, was trained on a
    different base, or its ID map is not an extension of the base's.
    """
    from tandem.generative.idmap import load_id_map

    directory = Path(directory)
    manifest = read_adapter_manifest(directory)
    verify_files(directory, manifest, required=ADAPTER_WEIGHTS)
    want = str(manifest.get("base", {}).get("model_sha256", ""))
    have = base_fingerprint(artifact.manifest)
    if want != have:
        raise CorruptArtifact(f"adapter {directory} was trained on base weights {want[:12]}, "
                              f"not on this base ({have[:12]}); train it again on the current base")
    id_map = load_id_map(directory / manifest["id_map"]["path"])
    _check_extension(artifact.id_map, id_map, artifact.tokenizer.id_space, directory)
    peft_model = load_adapter(artifact.model, directory)
    if not peft_model.tandem_spec.mergeable:
        raise CorruptArtifact(f"adapter {directory} uses `{peft_model.tandem_spec.method}`, which cannot be "
                              "merged for serving")
    model = merge(peft_model)
    return GenerativeArtifact(model=model, tokenizer=artifact.tokenizer, id_map=id_map,
                              manifest=artifact.manifest, adapter_manifest=manifest)


def _check_extension(base: Any, extended: Any, id_space: tuple[int, ...], where: Path) -> None:
    """The extended map keeps every base item's ID and stays inside the tokenizer's ID space."""
    base_ids = base.item_ids()
    if extended.item_ids()[: len(base_ids)] != base_ids:
        raise CorruptArtifact(f"adapter {where}: its ID map does not extend the base's (items differ)")
    codes = np.asarray(extended.as_array())
    if not np.array_equal(codes[: len(base_ids)], np.asarray(base.as_array())):
        raise CorruptArtifact(f"adapter {where}: its ID map changes base items' IDs")
    if len(codes) and (codes.max(0) >= np.asarray(id_space)).any():
        raise CorruptArtifact(f"adapter {where}: its ID map uses codes outside the model's ID space {id_space}")
