"""One place that turns a fusion name (and an optional learned model) into a :class:`Fuser`.

Shared by ``tandem serve`` and ``tandem eval --system hybrid`` so that the gateway and the
evaluation choose fusion by the same rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tandem.errors import InvalidInput
from tandem.fusion.base import Fuser

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


def make_fuser(fusion: str = "auto", fusion_model: Path | None = None, lookup: Any = None,
               has_intents: bool = False) -> Fuser:
    """The :class:`Fuser` for ``fusion`` (see :func:`resolve_fusion`). ``lookup`` (an
    :class:`~tandem.search.ItemLookup`) gives the learned fusion its title features."""
    from tandem.fusion.normalized import ScoreFusion
    from tandem.fusion.rrf import RRF

    name = resolve_fusion(fusion, fusion_model, has_intents)
    if name == "rrf":
        return RRF()
    if name in ("minmax", "zscore"):
        return ScoreFusion(name)
    if fusion_model is None:
        raise InvalidInput("`fusion` learned needs a fusion model (`--fusion-model`)")
    if not Path(fusion_model).is_file():
        raise InvalidInput(f"`fusion_model` {fusion_model} does not exist")
    from tandem.fusion.learned import LearnedFusion, catalog_titles

    return LearnedFusion.load(fusion_model, titles=catalog_titles(lookup) if lookup is not None else None)
