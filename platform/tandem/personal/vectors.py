"""Item vectors and semantic IDs for profiles: the generative model's item embeddings.

A v2 (tree) model stores one embedding per item (``nodes.<last>`` in
``decoder.safetensors``, row ``i`` = the ID map's ``i``-th item); it starts at the pretrained
encoder's embedding of the item's text and stays close to it, so it is the item's vector in
the encoder's space at no extra encoder pass. Loaded with safetensors' NumPy reader (no
torch), rows normalised to unit length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tandem.errors import CorruptArtifact, InvalidInput


class ItemVectors:
    """Unit item vectors and ID codes by item id."""

    def __init__(self, item_ids: Sequence[str], vectors: np.ndarray, codes: np.ndarray) -> None:
        if vectors.ndim != 2 or len(vectors) != len(item_ids) or len(codes) != len(item_ids):
            raise InvalidInput(f"`vectors` {vectors.shape} and `codes` {codes.shape} must have one row per item "
                               f"({len(item_ids)})")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        self.codes = np.asarray(codes, dtype=np.int64)
        self.row: Mapping[str, int] = {iid: i for i, iid in enumerate(item_ids)}
        self.item_ids = list(item_ids)

    @property
    def dim(self) -> int:
        """Vector width."""
        return int(self.vectors.shape[1])

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.row

    def vector(self, item_id: str) -> np.ndarray | None:
        """The unit vector of ``item_id``, ``None`` when unknown."""
        r = self.row.get(item_id)
        return None if r is None else self.vectors[r]

    def code(self, item_id: str) -> tuple[int, ...]:
        """The semantic ID of ``item_id`` (empty when unknown)."""
        r = self.row.get(item_id)
        return () if r is None else tuple(int(c) for c in self.codes[r])

    @classmethod
    def from_tree_model(cls, folder: str | Path) -> ItemVectors:
        """The item table of a v2 model folder (``decoder.safetensors`` + ``idmap/``)."""
        from safetensors.numpy import load_file

        from tandem.ids.idmap import IdMap

        folder = Path(folder)
        decoder = folder / "decoder.safetensors"
        if not decoder.is_file():
            raise InvalidInput(f"`model` {folder} has no decoder.safetensors (a v2 tree model is needed)")
        tensors = load_file(str(decoder))
        levels = sorted(int(k.split(".")[1]) for k in tensors if k.startswith("nodes."))
        if not levels:
            raise CorruptArtifact(f"{decoder} has no node embeddings")
        table = tensors[f"nodes.{levels[-1]}"]
        id_map = IdMap.load(str(folder / "idmap"))
        ids = id_map.item_ids()
        if len(ids) != len(table):
            raise CorruptArtifact(f"{folder}: {len(table)} item embeddings for {len(ids)} items in the ID map")
        return cls(ids, table, id_map.as_array())
