"""One way to assemble a :class:`~tandem.search.orchestrator.HybridSearcher` from what decides
its ranking, so that the gateway (``tandem serve``), ``tandem search``, ``tandem eval --system
hybrid`` and the demo rank alike: same catalog rule, same intents, same fusion choice
(:func:`tandem.fusion.factory.make_fuser`).

The callers build the sources (local, in-process or remote retrievers) and name the rest in a
:class:`SearcherSpec`; :func:`build_searcher` does the choosing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tandem.cache import ResultCache
from tandem.errors import InvalidInput, TandemError
from tandem.fusion.factory import make_fuser
from tandem.intent.base import IntentDecomposer
from tandem.personal.serving import PersonalSpec
from tandem.retriever import Retriever
from tandem.search.catalog import InMemoryCatalog, ItemLookup, StoredFieldsLookup
from tandem.search.orchestrator import HybridSearcher
from tandem.search.request import SearchConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearcherSpec:
    """Everything that decides how a searcher ranks, besides its sources' own models.

    Catalog (titles, filter fields, which items still exist): ``catalog_file`` (items JSONL),
    else ``catalog`` (any :class:`ItemLookup`, e.g. the gateway's remote ``Lookup``), else the
    stored fields of the first source that has them (a Lucene index), else none.
    Intents: ``intents`` (a decomposer object, e.g. a remote one) or ``intent_model`` (a
    ``tandem intent fit`` folder), else — when the fusion is the model the registry promoted —
    the decomposer that model was fitted with (its artifact's ``intent.json``), else the whole
    query. Fusion: ``fusion`` by the rule of
    :func:`~tandem.fusion.factory.make_fuser`; ``auto`` takes ``fusion_model`` when given, else
    the fusion model the registry promoted with the base in use (``model``: a registry
    base-model folder, or ``registry``: its current base). Personalisation: ``personal`` (user
    profiles re-rank the fused list of requests with a known user; others rank as without it).
    """

    sources: Sequence[Retriever]
    fusion: str = "auto"
    fusion_model: Path | None = None
    model: Path | None = None
    registry: str | None = None
    intents: IntentDecomposer | None = None
    intent_model: Path | None = None
    catalog: ItemLookup | None = None
    catalog_file: Path | None = None
    cache: ResultCache | None = None
    config: SearchConfig = field(default_factory=SearchConfig)
    personal: PersonalSpec | None = None


def spec_catalog(spec: SearcherSpec) -> ItemLookup | None:
    """The :class:`ItemLookup` ``spec`` names (see :class:`SearcherSpec` for the order)."""
    if spec.catalog_file is not None:
        if not Path(spec.catalog_file).is_file():
            raise InvalidInput(f"`catalog_file` {spec.catalog_file} does not exist")
        return InMemoryCatalog.from_jsonl(str(spec.catalog_file))
    if spec.catalog is not None:
        return spec.catalog
    return next((StoredFieldsLookup(r) for r in spec.sources if callable(getattr(r, "documents", None))), None)


def spec_promoted_fusion(spec: SearcherSpec) -> Path | None:
    """The fusion model the registry promoted with the base in use, when ``spec``'s fusion is
    ``auto`` without a ``fusion_model`` (:func:`~tandem.fusion.factory.promoted_fusion_model`);
    else ``None``."""
    if spec.fusion != "auto" or spec.fusion_model is not None:
        return None
    from tandem.fusion.factory import promoted_fusion_model

    return promoted_fusion_model(spec.fusion, None, model=spec.model, registry=spec.registry)


def spec_intents(spec: SearcherSpec, promoted: Path | None = None) -> IntentDecomposer | None:
    """The decomposer ``spec`` names (see :class:`SearcherSpec` for the order), ``None`` for
    the whole query. ``promoted``: :func:`spec_promoted_fusion` when the caller has it (else it
    is looked up here when needed)."""
    if spec.intents is not None and spec.intent_model is not None:
        raise InvalidInput("give `intents` or `intent_model`, not both")
    if spec.intents is not None:
        return spec.intents
    from tandem.intent.decomposer import CatalogIntentDecomposer

    path = spec.intent_model
    if path is None and spec.fusion == "auto" and spec.fusion_model is None:
        from tandem.registry.fusion import promoted_intent_model

        promoted = promoted if promoted is not None else spec_promoted_fusion(spec)
        path = promoted_intent_model(promoted) if promoted is not None else None
        if path is None:
            return None
        try:
            decomposer = CatalogIntentDecomposer.load(path)
        except TandemError as exc:  # the default must never stop serving
            log.warning("intents: cannot use %s promoted with the fusion model (%s); whole queries", path, exc)
            return None
        log.info("intents: %s, fitted with the promoted fusion model (%s)", decomposer.version(), path)
        return decomposer
    return None if path is None else CatalogIntentDecomposer.load(path)


def build_searcher(spec: SearcherSpec) -> HybridSearcher:
    """The searcher ``spec`` describes. Raises :class:`InvalidInput` naming the spec field at
    fault (an unknown ``fusion``, ``learned`` without a model, a missing file)."""
    if not spec.sources:
        raise InvalidInput("`sources` is empty; a searcher needs at least one source")
    lookup = spec_catalog(spec)
    promoted = spec_promoted_fusion(spec)  # one registry read for the fusion model and its intents
    intents = spec_intents(spec, promoted)
    # `model`/`registry` only serve make_fuser's own lookup of the promoted model, done above.
    fuser = make_fuser(spec.fusion, spec.fusion_model, lookup, has_intents=intents is not None, promoted=promoted)
    reader = None
    if spec.personal is not None:
        from tandem.personal.rerank import PersonalFuser
        from tandem.personal.serving import personal_parts

        reader, weights, depth = personal_parts(spec.personal)
        fuser = PersonalFuser(fuser, weights, depth)
    return HybridSearcher(spec.sources, fuser=fuser, intents=intents, cache=spec.cache, catalog=lookup,
                          config=spec.config, personal=reader)


__all__ = ["SearcherSpec", "build_searcher", "spec_catalog", "spec_intents", "spec_promoted_fusion"]
