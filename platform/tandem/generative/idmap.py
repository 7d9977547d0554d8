"""The generative model's view of the semantic-ID map (:class:`tandem.ids.IdMap`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tandem.errors import CorruptArtifact, InvalidInput


def load_id_map(path: Path) -> Any:
    """Load the ID map saved inside a model folder (JSON + npz, ``allow_pickle=False``)."""
    from tandem.ids import IdMap

    try:
        return IdMap.load(str(path))
    except InvalidInput as exc:  # a malformed map inside a model folder is a corrupt artifact
        raise CorruptArtifact(f"ID map {path} cannot be read: {exc}") from None


def id_space(id_map: Any, codes: np.ndarray) -> list[int]:
    """Codes per ID position: the map's declared space (reserved codes included) or max + 1.

    Sizing the ID tokens by the declared space means items assigned later (from the
    reserved suffixes) need no new tokens, so an adapter can learn them on the same model.
    """
    observed = (codes.max(0) + 1).tolist() if len(codes) else [1] * codes.shape[1]
    declared = id_map.code_space() if hasattr(id_map, "code_space") else None
    if declared:
        return [max(int(a), int(b)) for a, b in zip(declared, observed, strict=True)]
    return [int(x) for x in observed]
