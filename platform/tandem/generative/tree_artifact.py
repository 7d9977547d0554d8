"""The model folder of the generative retriever v2, and the only way to load one.

Layout: ``decoder.safetensors`` (the ID decoder and every node embedding), ``encoder/``
(the encoder as trained — LoRA merged — with its tokenizer, safetensors only), ``idmap/``
(the semantic-ID map, whose embedder names the encoder the IDs were built with), optionally
``replay_queries.tsv`` (training queries kept for the hourly adapters' replay) and
``manifest.json`` (``format_version`` 2.x, ``kind: tree``, shapes, training summary and a
SHA-256 of every file). Loading verifies every checksum before parsing anything, refuses
pickles, and refuses a folder whose encoder is not the one its ID map was built with.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tandem.encoder import TextEncoder, check_encoder_folder
from tandem.errors import CorruptArtifact
from tandem.generative.artifacts import FORMAT, IDMAP_DIR, verify_files
from tandem.versioned import MANIFEST, read_versioned_manifest, sha256_file
from tandem.generative.tree_decoding import TreeIndex
from tandem.generative.tree_model import TreeDecoder, TreeDecoderConfig
from tandem.ids.idmap import IdMap

TREE_FORMAT_VERSION = "2.0"
KIND = "tree"
DECODER_FILE = "decoder.safetensors"
ENCODER_DIR = "encoder"
REPLAY_FILE = "replay_queries.tsv"
#: Most (query, item) pairs a base keeps for its adapters' replay (a seeded sample beyond it).
REPLAY_LIMIT = 50_000
_KNOWN_KEYS = {"format", "format_version", "kind", "created_utc", "encoder", "decoder", "id_map", "training", "files"}


def is_tree_folder(directory: Path) -> bool:
    """Whether ``directory`` holds a v2 (tree) model rather than a v1 T5 one (by its manifest)."""
    try:
        body = json.loads((Path(directory) / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(body, dict) and str(body.get("format_version", "")).startswith("2.")


@dataclass
class TreeArtifact:
    """A loaded v2 folder: encoder, decoder, ID map and its tree index."""

    encoder: TextEncoder
    model: TreeDecoder
    id_map: IdMap
    index: TreeIndex
    manifest: dict[str, Any] = field(default_factory=dict)


def append_items(artifact: TreeArtifact, codes: list[tuple[int, ...]], vectors: torch.Tensor) -> None:
    """Add items (IDs under existing leaves) to the tree and their rows to the item table, in order.

    The one way new items join a loaded model: at assignment (:meth:`TreeRetriever.add_items`),
    in adapter training and when an adapter is attached.
    """
    for c in codes:
        artifact.index.add(c)
    table = artifact.model.nodes[-1]
    grown = torch.cat([table.data, vectors.to(dtype=table.dtype, device=table.device)])
    artifact.model.nodes[-1] = torch.nn.Parameter(grown, requires_grad=table.requires_grad)
    if len(artifact.index.paths) != len(grown):
        raise RuntimeError("item rows and the item-embedding table are out of step")


def _write_replay(path: Path, pairs: Sequence[tuple[str, str]]) -> None:
    import random

    rows = list(dict.fromkeys((" ".join(q.split()), i) for q, i in pairs if q.strip()))
    if len(rows) > REPLAY_LIMIT:
        rows = random.Random(len(rows)).sample(rows, REPLAY_LIMIT)
    path.write_text("".join(f"{q}\t{i}\n" for q, i in rows), encoding="utf-8")


def read_replay_queries(directory: Path) -> list[tuple[str, str]]:
    """The (query text, item id) pairs a v2 folder keeps for replay (empty when it has none).
    Read after :func:`load_tree_model` verified the folder's checksums."""
    path = Path(directory) / REPLAY_FILE
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        query, tab, item = line.partition("\t")
        if not tab or not query or not item:
            raise CorruptArtifact(f"{path}:{n}: expected `query<TAB>item id`")
        out.append((query, item))
    return out


def save_tree_model(directory: Path, model: TreeDecoder, encoder: TextEncoder, id_map: IdMap, *,
                    base_fingerprint: str, training: dict[str, Any] | None = None,
                    replay: Sequence[tuple[str, str]] = ()) -> Path:
    """Write a complete v2 folder (see the module docstring); returns the manifest path.

    ``replay``: (query text, item id) pairs the model was trained on, kept as
    ``replay_queries.tsv`` (at most :data:`REPLAY_LIMIT`, a seeded sample beyond) so its hourly
    adapters can replay real queries of old items (:func:`read_replay_queries`)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if replay:
        _write_replay(directory / REPLAY_FILE, replay)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(directory / DECODER_FILE))
    enc_dir = directory / ENCODER_DIR
    encoder.model.save_pretrained(str(enc_dir), safe_serialization=True)
    encoder.tokenizer.save_pretrained(str(enc_dir))
    id_map.save(str(directory / IDMAP_DIR))
    files = {p.relative_to(directory).as_posix(): sha256_file(p)
             for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST
             and not p.relative_to(directory).parts[0].startswith(("cache", "checkpoint"))}
    manifest = {
        "format": FORMAT, "format_version": TREE_FORMAT_VERSION, "kind": KIND,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "encoder": {"path": ENCODER_DIR, "base_fingerprint": base_fingerprint, "max_length": encoder.max_length,
                    "dim": encoder.dim},
        "decoder": {"config": model.decoder_config.model_dump(), "nodes_per_position": [len(t) for t in model.nodes]},
        "id_map": {"path": IDMAP_DIR, "version": str(id_map.version), "items": len(id_map)},
        "training": training or {},
        "files": files,
    }
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return path


def load_tree_model(directory: Path, device: str | torch.device = "cpu") -> TreeArtifact:
    """Verify and load a folder written by :func:`save_tree_model` (never unpickles)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    manifest = read_versioned_manifest(directory, fmt=FORMAT, fmt_version=TREE_FORMAT_VERSION,
                                       known_keys=_KNOWN_KEYS, what="generative model")
    verify_files(directory, manifest, required=DECODER_FILE)
    enc_dir = directory / manifest["encoder"]["path"]
    check_encoder_folder(enc_dir)
    id_map = IdMap.load(str(directory / manifest["id_map"]["path"]))
    emb_fp = getattr(id_map.embedder, "fingerprint", None)
    if emb_fp is None or emb_fp != manifest["encoder"]["base_fingerprint"]:
        raise CorruptArtifact(f"{directory}: the ID map was built with another encoder than the one this model "
                              f"was trained from (ID map {str(emb_fp)[:12]}, model "
                              f"{str(manifest['encoder']['base_fingerprint'])[:12]}); retrain or rebuild the IDs")
    encoder = TextEncoder(enc_dir, device=device, max_length=int(manifest["encoder"]["max_length"]))
    index = TreeIndex(id_map.as_array())
    sizes = manifest["decoder"]["nodes_per_position"]
    if index.nodes_per_position != sizes:
        raise CorruptArtifact(f"{directory}: the ID map's tree {index.nodes_per_position} does not match the "
                              f"decoder's node tables {sizes}")
    model = TreeDecoder(encoder.dim, sizes, TreeDecoderConfig(**manifest["decoder"]["config"]))
    try:
        model.load_state_dict(load_file(str(directory / DECODER_FILE)))
    except (RuntimeError, KeyError) as exc:
        raise CorruptArtifact(f"cannot load {DECODER_FILE} in {directory}: {exc}") from None
    model.to(device).eval()
    return TreeArtifact(encoder=encoder, model=model, id_map=id_map, index=index, manifest=manifest)
