"""On-disk format of an ID map: a directory with ``idmap.json`` and ``arrays.npz``.

``idmap.json`` holds what people and other tools read (format version, map version,
config, item ids and their codes, category names); ``arrays.npz`` holds the tree's
prefixes and centroids and the fitted embedder's arrays. ``format_version`` is
``MAJOR.MINOR``: a different major is refused; a newer minor loads, dropping keys this
version does not know, with a warning (so an older server can read a newer builder's map).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tandem.errors import CorruptArtifact, NotFound
from tandem.ids.config import EmbedderConfig, SemanticIdConfig
from tandem.ids.embed import embedder_from_state
from tandem.versioned import newer_minor, same_major

if TYPE_CHECKING:
    from tandem.ids.idmap import IdMap

FORMAT_VERSION = "1.0"
_KNOWN_KEYS = {"format_version", "version", "base_id", "category_levels", "config", "item_ids", "codes",
               "category_names"}
_EMB_PREFIX = "embedder__"


def save_idmap(idmap: IdMap, path: str | os.PathLike[str]) -> None:
    """Write ``idmap`` to directory ``path`` (created if missing); files are replaced atomically."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "format_version": FORMAT_VERSION,
        "version": idmap.version,
        "base_id": idmap.base_id,
        "category_levels": idmap.category_levels,
        "config": idmap.config.model_dump(mode="json"),
        "item_ids": idmap.item_ids(),
        "codes": idmap.as_array().tolist(),
        "category_names": idmap.tree.names,
    }
    arrays: dict[str, Any] = {}
    for lv, (p, c) in enumerate(zip(idmap.tree.prefixes, idmap.tree.centroids, strict=True)):
        arrays[f"prefixes_{lv}"] = p
        arrays[f"centroids_{lv}"] = c
    if idmap.embedder is not None:
        try:
            state = idmap.embedder.state()
        except NotImplementedError:
            state = {}
        for k, v in state.items():
            arrays[_EMB_PREFIX + k] = v
    tmp_npz = out / "arrays.npz.tmp"
    with open(tmp_npz, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp_npz, out / "arrays.npz")
    tmp_json = out / "idmap.json.tmp"
    tmp_json.write_text(json.dumps(doc, separators=(",", ":")))
    os.replace(tmp_json, out / "idmap.json")


def _check_format(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    fv = str(doc.get("format_version", ""))
    if not same_major(fv, FORMAT_VERSION):
        raise CorruptArtifact(f"{path}: ID map format {fv!r} is not readable by format {FORMAT_VERSION}")
    unknown = set(doc) - _KNOWN_KEYS
    if unknown:
        if newer_minor(fv, FORMAT_VERSION):
            warnings.warn(f"{path}: ID map format {fv} is newer than {FORMAT_VERSION}; "
                          f"ignoring unknown keys {sorted(unknown)}", UserWarning, stacklevel=3)
        else:
            raise CorruptArtifact(f"{path}: unexpected keys {sorted(unknown)} for format {fv}")
    config = dict(doc["config"])
    unknown_cfg = set(config) - set(SemanticIdConfig.model_fields)
    emb_cfg = dict(config.get("embedder", {}))
    unknown_emb = set(emb_cfg) - set(EmbedderConfig.model_fields)
    if unknown_cfg or unknown_emb:
        warnings.warn(f"{path}: ignoring unknown config keys {sorted(unknown_cfg | unknown_emb)}",
                      UserWarning, stacklevel=3)
        config = {k: v for k, v in config.items() if k not in unknown_cfg}
        config["embedder"] = {k: v for k, v in emb_cfg.items() if k not in unknown_emb}
    doc = {k: v for k, v in doc.items() if k in _KNOWN_KEYS}
    doc["config"] = config
    return doc


def read_idmap(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parts of a map written by :func:`save_idmap`, checked: the keyword arguments of
    :class:`~tandem.ids.idmap.IdMap` with ``tree`` as the keyword arguments of its
    :class:`~tandem.ids.idmap.CodeTree` (``IdMap.load`` assembles them; this module never
    imports the class, so the class may call it)."""
    base = Path(path)
    jpath, npath = base / "idmap.json", base / "arrays.npz"
    if not jpath.is_file() or not npath.is_file():
        raise NotFound(f"{base} is not an ID map directory (needs idmap.json and arrays.npz)")
    try:
        doc = json.loads(jpath.read_text())
        with np.load(npath, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise CorruptArtifact(f"{base}: unreadable ID map ({exc})") from exc
    doc = _check_format(doc, jpath)
    try:
        config = SemanticIdConfig.model_validate(doc["config"])
        levels = config.levels
        tree = {
            "prefixes": [arrays[f"prefixes_{lv}"].astype(np.int64) for lv in range(levels)],
            "centroids": [arrays[f"centroids_{lv}"].astype(np.float32) for lv in range(levels)],
            "names": list(doc["category_names"]),
        }
        emb_state = {k[len(_EMB_PREFIX):]: v for k, v in arrays.items() if k.startswith(_EMB_PREFIX)}
        embedder = embedder_from_state(emb_state) if emb_state else None
        codes = np.array(doc["codes"], np.int64).reshape(len(doc["item_ids"]), config.length)
        return {"config": config, "item_ids": doc["item_ids"], "codes": codes, "tree": tree, "embedder": embedder,
                "version": int(doc["version"]), "base_id": str(doc["base_id"]),
                "category_levels": int(doc["category_levels"])}
    except (KeyError, ValueError, TypeError) as exc:
        raise CorruptArtifact(f"{base}: inconsistent ID map ({type(exc).__name__}: {exc})") from exc
