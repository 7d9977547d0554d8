"""The fusion model that goes with a base model.

The base pipeline publishes the learned fusion it trained on a base model's lists and item
scores as a ``fusion`` artifact whose parent is that ``base-model:<version>``, and promotes
both together. A fusion model only fits the base it was trained on (its features are that
model's log-probabilities and ranks), so :func:`current_fusion_for_base` hands out the
registry's current fusion model only when its parent is the base being served; anything
else (no fusion promoted yet, one trained on another base, an unreadable one) is ``None``
with a log line saying why, and the caller keeps its rule without a learned model.

:func:`registry_base_of` recognises a model folder that *is* a base-model version of a local
registry (``<root>/base-model/<version>``, with its manifest), so ``--model`` pointing into
the registry finds the fusion model promoted with it.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tandem.errors import CorruptArtifact, NotFound
from tandem.intent.decomposer import FILE as DECOMPOSER_FILE
from tandem.registry.manifest import MANIFEST_NAME, ArtifactKind, Manifest
from tandem.registry.store import Registry

log = logging.getLogger(__name__)

MODEL_FILE = "fusion.json"
"""The learned fusion model (``tandem.fusion.learned`` JSON) in a ``fusion`` artifact."""
REPORT_FILE = "report.json"
"""The fit's report (selection figures, ablation, feature importances) beside it."""
INTENT_FILE = DECOMPOSER_FILE
"""``intent.json``: the intent decomposer the model was fitted with (``tandem intent fit``), when it had one
(the base pipeline's fusion step writes it; :func:`promoted_intent_model` finds it)."""


@dataclass(frozen=True)
class PromotedFusion:
    """A fusion model the registry pairs with a base model."""

    path: Path
    """The model JSON on the local disk (the registry's own file, or a verified download)."""
    ref: str
    """``fusion:<version>``."""
    base: str
    """``base-model:<version>`` it was trained on (its parent)."""


def registry_base_of(model_dir: str | Path) -> tuple[Registry, str] | None:
    """(registry, version) when ``model_dir`` is a base-model version folder of a local
    registry; ``None`` for any other folder (a model trained outside the registry)."""
    folder = Path(model_dir)
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file() or folder.parent.name != ArtifactKind.BASE_MODEL.value:
        return None
    try:
        m = Manifest.from_json(manifest.read_bytes(), str(manifest))
    except (CorruptArtifact, OSError) as exc:
        log.warning("%s: unreadable registry manifest (%s); not looking for its fusion model", manifest, exc)
        return None
    if m.kind != ArtifactKind.BASE_MODEL or m.version != folder.name:
        return None
    return Registry(folder.parent.parent), m.version


def current_fusion_for_base(registry: Registry | str, base_version: str | None = None,
                            cache_dir: str | Path | None = None) -> PromotedFusion | None:
    """The registry's current fusion model when its parent is ``base-model:<base_version>``
    (default: the registry's current base); ``None``, logged, otherwise.

    Files are verified against the manifest first; on an object store the artifact is
    downloaded under ``cache_dir`` (default: a new temporary folder).
    """
    reg = registry if isinstance(registry, Registry) else Registry(str(registry))
    try:
        base = base_version or reg.current(ArtifactKind.BASE_MODEL)
        if base is None:
            log.info("fusion: no current base-model in the registry at %s; no promoted fusion model", reg.uri)
            return None
        base_ref = f"{ArtifactKind.BASE_MODEL.value}:{base}"
        version = reg.current(ArtifactKind.FUSION)
        if version is None:
            log.info("fusion: the registry at %s has no current fusion model (for %s)", reg.uri, base_ref)
            return None
        art = reg.get(ArtifactKind.FUSION, version)  # verifies every checksum
    except (CorruptArtifact, NotFound) as exc:
        log.error("fusion: cannot read the registry's current fusion model (%s); not using it", exc)
        return None
    ref = art.manifest.ref
    if base_ref not in art.manifest.parents:
        log.warning("fusion: current %s was trained on %s, not on %s; not using it", ref,
                    ", ".join(art.manifest.parents) or "no base", base_ref)
        return None
    if MODEL_FILE not in art.manifest.files:
        log.error("fusion: %s has no %s; not using it", ref, MODEL_FILE)
        return None
    folder = art.local_path
    if folder is None:
        dest = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="tandem-fusion-"))
        folder = reg.download(ArtifactKind.FUSION, art.manifest.version, dest / art.manifest.version)
    return PromotedFusion(folder / MODEL_FILE, ref, base_ref)


def promoted_intent_model(fusion_model: Path) -> Path | None:
    """The :data:`INTENT_FILE` beside a promoted fusion model file, ``None`` when its artifact
    has none (fusion models published before the pipeline fitted intents)."""
    path = Path(fusion_model).parent / INTENT_FILE
    return path if path.is_file() else None


__all__ = ["INTENT_FILE", "MODEL_FILE", "REPORT_FILE", "PromotedFusion", "current_fusion_for_base",
           "promoted_intent_model", "registry_base_of"]
