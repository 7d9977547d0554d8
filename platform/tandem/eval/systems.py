"""Named systems ``tandem eval --system NAME`` can evaluate, built by registered factories.

A factory turns a :class:`SystemSpec` (catalog, model directory, options) into a
:class:`~tandem.retriever.Retriever`. ``bm25`` is registered here; the generative and
hybrid modules register ``generative`` and ``hybrid`` with :func:`register_system`
(or through :data:`LAZY_SYSTEMS`, so their heavy imports happen only when chosen).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem.errors import InvalidInput
from tandem.retriever import Retriever

log = logging.getLogger(__name__)


@dataclass
class SystemSpec:
    """What a system factory gets from the command line."""

    catalog: Path | None = None
    catalog_format: str | None = None
    model: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    """System-specific options (e.g. ``k1``, ``b``, ``rm3``, ``fields`` for bm25)."""
    home: Path = Path(".tandem")
    rebuild: bool = False


SystemFactory = Callable[[SystemSpec], Retriever]

#: ``SystemSpec.options`` keys that configure the hybrid system itself (intents, fusion,
#: sources); the source systems it builds never see them.
HYBRID_OPTIONS = frozenset({"intent_model", "fusion", "fusion_model", "candidates", "generative_depth", "sources"})
#: ``SystemSpec.options`` keys only the generative system reads (bm25 ignores them).
GENERATIVE_OPTIONS = frozenset({"adapter", "num_beams", "upper_beam", "normalize", "batch_size", "device", "prf_docs",
                                "prf_weight", "prf_pool"})

_SYSTEMS: dict[str, SystemFactory] = {}

#: name → "module:function" registered on first use, for systems living in other packages.
LAZY_SYSTEMS: dict[str, str] = {
    "generative": "tandem.generative.loading:generative_system",
    "hybrid": "tandem.eval.hybrid:hybrid_system",
    "ensemble": "tandem.generative.ensemble:ensemble_system",
}


def register_system(name: str, factory: SystemFactory) -> None:
    """Make ``factory`` available as ``tandem eval --system name``."""
    _SYSTEMS[name] = factory


def system_names() -> list[str]:
    """Every registered system name."""
    return sorted(set(_SYSTEMS) | set(LAZY_SYSTEMS))


def build_system(name: str, spec: SystemSpec) -> Retriever:
    """Instantiate system ``name``; an unknown name raises :class:`InvalidInput`."""
    if name not in _SYSTEMS and name in LAZY_SYSTEMS:
        module, func = LAZY_SYSTEMS[name].split(":")
        register_system(name, getattr(importlib.import_module(module), func))
    if name not in _SYSTEMS:
        raise InvalidInput(f"`system` {name!r} is unknown; available: {', '.join(system_names())}")
    return _SYSTEMS[name](spec)


def file_sha1(path: Path) -> str:
    """Content hash of a file (the cache key of indexes built from it)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bm25_index_for(spec: SystemSpec) -> Path:
    """Index directory for ``spec.catalog``: reused from the cache under ``<home>/indexes``
    when one was built from the same file content with the same index options, else built."""
    from tandem.catalog.loaders import load_items
    from tandem.sparse import build_index
    from tandem.sparse.config import META_FILE

    if spec.catalog is None:
        raise InvalidInput("`catalog` is required for --system bm25")
    cfg = _sparse_config(spec)
    key_src = f"{file_sha1(spec.catalog)}:{spec.catalog_format}:{sorted(cfg.index_options().items())}"
    key = hashlib.sha1(key_src.encode()).hexdigest()[:16]
    index_dir = spec.home / "indexes" / f"bm25-{key}"
    if (index_dir / META_FILE).is_file() and not spec.rebuild:
        log.info("reusing cached BM25 index %s", index_dir)
        return index_dir
    loaded = load_items(spec.catalog, format=spec.catalog_format)
    log.info("%s: %s", spec.catalog, loaded.summary())
    build_index(loaded.items, index_dir, cfg)
    return index_dir


def _sparse_config(spec: SystemSpec) -> Any:
    from tandem.sparse import SparseConfig

    try:
        return SparseConfig(**{k: v for k, v in spec.options.items()
                               if k not in HYBRID_OPTIONS and k not in GENERATIVE_OPTIONS})
    except ValueError as e:
        raise InvalidInput(f"bm25 options: {e}") from None


def _bm25(spec: SystemSpec) -> Retriever:
    from tandem.sparse import SparseRetriever

    return SparseRetriever(bm25_index_for(spec), _sparse_config(spec), writable=False)


register_system("bm25", _bm25)
