"""What a searcher needs to personalise (issue 22 item 1): :class:`PersonalSpec`, the part of
:class:`~tandem.search.build.SearcherSpec` that names the profile store, the item vectors and
the re-ranking weights, and :func:`personal_parts`, which opens them.

The weights file is what the fitting writes (:func:`save_weights`,
``tandem.personal.weights/1``: the profile feature weights, the re-ranking depth and how they
were fitted); without one the defaults of :class:`~tandem.personal.rerank.PersonalFuser` apply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem.errors import CorruptArtifact, InvalidInput
from tandem.personal.features import ProfileReader
from tandem.personal.profile import ProfileConfig
from tandem.personal.store import ProfileStore, open_profile_store
from tandem.personal.vectors import ItemVectors

WEIGHTS_FORMAT = "tandem.personal.weights/1"


@dataclass(frozen=True)
class PersonalSpec:
    """Profiles for a searcher: item vectors from ``model`` (a v2 model folder) or ``vectors``;
    the store is ``store`` (already open), else Redis at ``redis_url``, else the in-process
    store; ``weights``: a weights file (:func:`save_weights`), else the defaults."""

    model: Path | None = None
    redis_url: str | None = None
    weights: Path | None = None
    store: ProfileStore | None = None
    vectors: ItemVectors | None = None
    config: ProfileConfig = field(default_factory=ProfileConfig)


def save_weights(path: Path, weights: Mapping[str, float], depth: int, fit: Mapping[str, Any] | None = None) -> None:
    """Write a weights file (module docstring)."""
    body = {"format": WEIGHTS_FORMAT, "weights": dict(weights), "depth": depth, "fit": dict(fit or {})}
    Path(path).write_text(json.dumps(body, indent=2) + "\n")


def load_weights(path: Path) -> tuple[dict[str, float], int]:
    """The weights and depth of a weights file; :class:`InvalidInput` / :class:`CorruptArtifact`
    naming what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"`personal weights` {p} does not exist")
    try:
        body = json.loads(p.read_text())
        if body.get("format") != WEIGHTS_FORMAT:
            raise CorruptArtifact(f"{p} is not a {WEIGHTS_FORMAT} file")
        return {str(k): float(v) for k, v in body["weights"].items()}, int(body.get("depth", 100))
    except CorruptArtifact:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptArtifact(f"{p}: unreadable weights file ({type(exc).__name__}: {exc})"[:300]) from None


def personal_parts(spec: PersonalSpec) -> tuple[ProfileReader, dict[str, float] | None, int]:
    """The :class:`ProfileReader` ``spec`` names, its weights (``None``: defaults) and depth."""
    vectors = spec.vectors
    if vectors is None:
        if spec.model is None:
            raise InvalidInput("`personal` needs item vectors: give `model` (a v2 model folder) or `vectors`")
        vectors = ItemVectors.from_tree_model(spec.model)
    store = spec.store if spec.store is not None else open_profile_store(spec.redis_url, spec.config)
    weights, depth = load_weights(spec.weights) if spec.weights is not None else (None, 100)
    return ProfileReader(store, vectors, spec.config), weights, depth


__all__ = ["PersonalSpec", "load_weights", "personal_parts", "save_weights"]
