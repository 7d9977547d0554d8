"""One place that turns a fusion name (and an optional learned model) into a :class:`Fuser`.

Shared by ``tandem serve``, ``tandem eval --system hybrid`` and ``tandem search`` so that the
gateway, the evaluation and the command line choose fusion by the same rule: ``auto`` without
a ``--fusion-model`` takes the learned fusion the registry promoted with the base model being
used, when there is one (:func:`promoted_fusion_model`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tandem.errors import InvalidInput
from tandem.fusion.base import Fuser

log = logging.getLogger(__name__)

FUSIONS = ("auto", "rrf", "minmax", "zscore", "learned")


def resolve_fusion(fusion: str, fusion_model: Path | None, has_intents: bool) -> str:
    """The concrete fusion ``auto`` stands for: the best measured on Home Depot dev
    (``bench.intent``) for the artifacts at hand — ``learned`` with a fusion model,
    ``minmax`` with an intent model (RRF of sub-queries lowers nDCG@10), else ``rrf``."""
    if fusion not in FUSIONS:
        raise InvalidInput(f"`fusion` {fusion!r} is unknown; use {', '.join(FUSIONS)}")
    if fusion != "auto":
        return fusion
    return "learned" if fusion_model is not None else "minmax" if has_intents else "rrf"


def promoted_fusion_model(fusion: str, fusion_model: Path | None, *, model: Path | None = None,
                          registry: str | None = None) -> Path | None:
    """The fusion model file to use: ``fusion_model`` when given; for ``auto`` without one,
    the registry's current fusion model when its parent is the base model in use — the
    registry's current base with ``registry`` (``tandem serve --registry``), or ``model`` when
    that folder is a base-model version of a local registry — else ``None`` (the rule of
    :func:`resolve_fusion` without a model). Logs which model it took; never raises for the
    registry's state (serving goes on without the learned model)."""
    if fusion != "auto" or fusion_model is not None or (registry is None and model is None):
        return fusion_model
    from tandem.registry.fusion import current_fusion_for_base, registry_base_of

    located = (registry, None) if registry is not None else registry_base_of(model) if model is not None else None
    if located is None:  # a model folder from outside the registry: nothing was promoted with it
        return None
    found = current_fusion_for_base(*located)
    if found is None:
        log.info("fusion auto: no fusion model promoted with this base; choosing without one")
        return None
    log.info("fusion auto: learned fusion %s, promoted with %s (%s)", found.ref, found.base, found.path)
    return found.path


def make_fuser(fusion: str = "auto", fusion_model: Path | None = None, lookup: Any = None,
               has_intents: bool = False, *, model: Path | None = None, registry: str | None = None,
               promoted: Path | None = None) -> Fuser:
    """The :class:`Fuser` for ``fusion`` (see :func:`resolve_fusion`). ``lookup`` (an
    :class:`~tandem.search.ItemLookup`) gives the learned fusion its title features;
    ``model`` / ``registry`` name the base model in use, whose promoted fusion model ``auto``
    takes when no ``fusion_model`` is given (:func:`promoted_fusion_model`); ``promoted``: that
    model when the caller already looked it up (no second registry read)."""
    from tandem.fusion.normalized import ScoreFusion
    from tandem.fusion.rrf import RRF

    given = fusion_model
    if promoted is not None and fusion == "auto" and fusion_model is None:
        fusion_model = promoted
    else:
        fusion_model = promoted_fusion_model(fusion, fusion_model, model=model, registry=registry)
    name = resolve_fusion(fusion, fusion_model, has_intents)
    if name == "rrf":
        return RRF()
    if name in ("minmax", "zscore"):
        return ScoreFusion(name)
    if fusion_model is None:
        raise InvalidInput("`fusion` learned needs a fusion model (`--fusion-model`)")
    if not Path(fusion_model).is_file():
        raise InvalidInput(f"`fusion_model` {fusion_model} does not exist")
    from tandem.errors import TandemError
    from tandem.fusion.learned import LearnedFusion, catalog_titles

    try:
        return LearnedFusion.load(fusion_model, titles=catalog_titles(lookup) if lookup is not None else None)
    except TandemError as exc:
        if given is not None:  # asked for by name: the user's mistake to hear about
            raise
        # The default must never stop serving, e.g. a gateway without titles (no --catalog) for
        # a model trained with title features.
        log.warning("fusion auto: cannot use the promoted fusion model %s (%s); choosing without it",
                    fusion_model, exc)
        return make_fuser(fusion, None, lookup, has_intents)
