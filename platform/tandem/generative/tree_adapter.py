"""Hourly adapters of a v2 (tree) base: the folder, and attaching one to a loaded base.

An adapter folder holds ``adapter.safetensors`` (LoRA matrices of the decoder's linear
layers, through ``peft``, and the new items' embedding rows), ``idmap/`` (the base's ID map
extended with the new items, placed in the reserved space of their nearest leaves) and
``manifest.json`` (the base it was made for — its decoder checksum and ID-map base id — the
checks' metrics and a SHA-256 of every file). Attaching verifies all of it, refuses an
adapter made for another base, adds the new items to the ID tree and merges LoRA into the
decoder, so serving runs a plain decoder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tandem.errors import CorruptArtifact
from tandem.generative.artifacts import verify_files
from tandem.versioned import MANIFEST, read_versioned_manifest, sha256_file

if TYPE_CHECKING:
    from tandem.generative.tree_artifact import TreeArtifact
    from tandem.generative.tree_model import TreeDecoder

FORMAT = "tandem.tree-adapter"
FORMAT_VERSION = "1.0"
WEIGHTS = "adapter.safetensors"
IDMAP_DIR = "idmap"
#: Decoder layers that get LoRA: cross-attention projections and the feed-forward pair.
LORA_TARGETS = ["q", "kv", "o", "ff.0", "ff.2"]
NEW_ROWS = "new_item_rows"
_KNOWN_KEYS = {"format", "format_version", "created_utc", "base", "lora", "id_map", "new_items", "metrics",
               "training", "files"}


def wrap_lora(model: TreeDecoder, rank: int) -> Any:
    """``model`` with LoRA injected (``peft.LoraModel``); only the LoRA matrices train."""
    from peft import LoraConfig, LoraModel

    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS, lora_dropout=0.0)
    return LoraModel(model, cfg, "default")


def base_identity(manifest: dict[str, Any], id_map: Any) -> dict[str, str]:
    """What names a base: its decoder checksum and its ID map's base id."""
    return {"decoder_sha256": str(manifest.get("files", {}).get("decoder.safetensors", "")),
            "id_map_base_id": str(id_map.base_id)}


def save_tree_adapter(directory: Path, lora_model: Any, new_rows: torch.Tensor, id_map: Any, *, rank: int,
                      base: dict[str, str], new_items: list[str], metrics: dict[str, float],
                      training: dict[str, Any]) -> Path:
    """Write a complete adapter folder; ``lora_model`` must still be unmerged."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in get_peft_model_state_dict(lora_model).items()}
    tensors[NEW_ROWS] = new_rows.detach().float().contiguous().cpu()
    save_file(tensors, str(directory / WEIGHTS))
    id_map.save(str(directory / IDMAP_DIR))
    files = {p.relative_to(directory).as_posix(): sha256_file(p) for p in sorted(directory.rglob("*"))
             if p.is_file() and p.name != MANIFEST}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "base": base,
                "lora": {"rank": rank, "targets": LORA_TARGETS}, "new_items": new_items,
                "id_map": {"path": IDMAP_DIR, "version": str(id_map.version), "items": len(id_map)},
                "metrics": metrics, "training": training, "files": files}
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return path


def read_tree_adapter_manifest(directory: Path) -> dict[str, Any]:
    """Parse and version-check a tree adapter folder's ``manifest.json``."""
    return read_versioned_manifest(Path(directory), fmt=FORMAT, fmt_version=FORMAT_VERSION, known_keys=_KNOWN_KEYS,
                                   what="generative adapter")


def attach_tree_adapter(artifact: TreeArtifact, directory: Path) -> dict[str, Any]:
    """Verify ``directory`` and fold it into ``artifact`` (in place); returns the adapter manifest."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from tandem.ids.idmap import IdMap

    directory = Path(directory)
    manifest = read_versioned_manifest(directory, fmt=FORMAT, fmt_version=FORMAT_VERSION, known_keys=_KNOWN_KEYS,
                                       what="generative adapter")
    verify_files(directory, manifest, required=WEIGHTS)
    want = base_identity(artifact.manifest, artifact.id_map)
    made_for = {k: v for k, v in (manifest.get("base") or {}).items() if k in want}
    if made_for != want:
        raise CorruptArtifact(f"adapter {directory} was trained on another base ({manifest.get('base')}), "
                              f"not on this one ({want})")
    id_map = IdMap.load(str(directory / manifest["id_map"]["path"]))
    base_ids = artifact.id_map.item_ids()
    ext_ids = id_map.item_ids()
    if ext_ids[: len(base_ids)] != base_ids:
        raise CorruptArtifact(f"adapter {directory}: its ID map does not extend the base's")
    tensors = load_file(str(directory / WEIGHTS))
    new_rows = tensors.pop(NEW_ROWS)
    if len(new_rows) != len(ext_ids) - len(base_ids):
        raise CorruptArtifact(f"adapter {directory}: {len(new_rows)} new item rows for "
                              f"{len(ext_ids) - len(base_ids)} new items")
    model = artifact.model
    lora = wrap_lora(model, int(manifest["lora"]["rank"]))
    result = set_peft_model_state_dict(lora, tensors)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise CorruptArtifact(f"adapter {directory}: unexpected LoRA tensors {unexpected[:3]}")
    from tandem.generative.tree_artifact import append_items

    artifact.model = lora.merge_and_unload().eval()
    append_items(artifact, [id_map.codes(i) for i in ext_ids[len(base_ids):]], new_rows)
    artifact.id_map = id_map
    artifact.manifest = {**artifact.manifest, "adapter": {k: manifest[k] for k in ("base", "lora", "id_map")}}
    return manifest
