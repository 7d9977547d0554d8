"""Hourly adapters: make new items retrievable on a frozen base model (seed chapter 5.2.4, 5.5).

``train_adapter`` is the whole continual-learning step of the adapter pipeline:

1. **IDs.** Items added since the base get IDs from the reserved code space of their
   nearest leaf (:meth:`tandem.ids.IdMap.assign`); items that changed keep their ID. No
   existing ID moves and no token is added (the tokenizer covers the reserved codes), so
   the adapter only has to teach new (text → ID) bindings.
2. **Training.** A LoRA adapter (any mergeable :class:`PeftSpec`) on the frozen base,
   trained on the new items' doc→id and pseudo-query→id examples, with **replay** of old
   items mixed into every epoch (``replay`` = their share of examples, 20 % by default:
   the chapter's 80/20) and optional **EWC** on the effective weights
   (:mod:`tandem.training.ewc`).
3. **Checks.** Before vs after, on the same queries: new-item R@10 (one held-out
   pseudo-query per item, a phrasing not trained on) and doc→id exact-match, old-item R@10
   and doc→id exact-match on a sample of old items (forgetting = the exact-match lost).
4. **Artifact.** Adapter weights + extended ID map + manifest (base fingerprint, metrics),
   see :mod:`tandem.generative.adapter_artifact`.

Pseudo-queries for new (and replayed) items come from :func:`title_queries` (word subsets
and prefixes of the title) by default, or from ``tandem.training.pseudo.template_queries``
(``pseudo_queries="template"``); too-short ones are dropped (``min_query_words``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tandem.catalog.item import Item
from tandem.errors import InvalidInput
from tandem.training.adapter_config import (
    AdapterConfig,
    adapter_config,
    pseudo_query_source,
    split_items,
    title_queries,
)

__all__ = ["AdapterConfig", "adapter_config", "pseudo_query_source", "select_items", "split_items", "title_queries",
           "train_adapter"]

log = logging.getLogger(__name__)


def select_items(base_dir: Path, *, catalog: Path | None = None, new_items: Path | None = None,
                 store: Path | None = None, since_version: int | None = None) -> tuple[list[Item], list[Item]]:
    """The new/changed items and the old items of an adapter run, from files or the catalog store.

    * ``catalog`` (+ optional ``new_items``): the new items are those of ``new_items``, or
      else the catalog items the base's ID map does not know (added since the base).
    * ``store`` (+ optional ``since_version``): the items upserted after that snapshot of
      the store, or else the live items the base does not know. Deletions cannot be
      unlearnt by an adapter; they are dropped at serving time by the catalog filter and
      for good at the next base rebuild.

    Old items are the live catalog's items that the base knows and that are not new.
    """
    if (catalog is None) == (store is None):
        raise InvalidInput("give `--catalog` or `--store` (the old items for replay and the forgetting check)")
    if since_version is not None and store is None:
        raise InvalidInput("`--since-version` needs `--store`")
    if new_items is not None and store is not None:
        raise InvalidInput("`--new-items` goes with `--catalog`; with `--store` use `--since-version`")
    known = set(_base_item_ids(Path(base_dir)))
    if store is not None:
        from tandem.streams.store import CatalogStore

        with CatalogStore(store) as st:
            live = list(st.items())
            if since_version is not None:
                changed = {c.item_id for c in st.changes_since(since_version) if c.op == "upsert"}
                new = [it for it in live if it.item_id in changed]
            else:
                new = [it for it in live if it.item_id not in known]
    else:
        from tandem.catalog.loaders import load_items

        live = load_items(catalog).items  # type: ignore[arg-type]
        if new_items is not None:
            new = load_items(new_items).items
        else:
            new = [it for it in live if it.item_id not in known]
    new_ids = {it.item_id for it in new}
    old = [it for it in live if it.item_id in known and it.item_id not in new_ids]
    return new, old


def _base_item_ids(base_dir: Path) -> list[str]:
    """The item ids a base model folder (v1 T5 or v2 tree) can name."""
    from tandem.generative.tree_artifact import is_tree_folder

    if is_tree_folder(base_dir):
        from tandem.ids.idmap import IdMap

        return IdMap.load(str(base_dir / "idmap")).item_ids()
    from tandem.generative.artifacts import read_manifest
    from tandem.generative.idmap import load_id_map

    return load_id_map(base_dir / read_manifest(base_dir)["id_map"]["path"]).item_ids()


def train_adapter(base_dir: Path, new_items: Sequence[Item], old_items: Sequence[Item], out: Path,
                  config: AdapterConfig | None = None, *, base_ref: str = "", progress: bool = False,
                  echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train an adapter for ``new_items`` on the base model in ``base_dir``; write it to ``out``.

    ``old_items`` are the base's catalog items (for replay, EWC and the forgetting checks);
    items also in ``new_items`` count as changed, not old. Returns the summary (metrics,
    timings, parameter counts), also stored in ``out/manifest.json``.
    """
    import torch

    from tandem.generative.tree_artifact import is_tree_folder

    cfg = config or AdapterConfig()
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        if is_tree_folder(Path(base_dir)):
            from tandem.training.tree_adapter_train import train_tree_adapter

            return train_tree_adapter(Path(base_dir), new_items, old_items, Path(out), cfg, base_ref=base_ref,
                                      echo=echo or (lambda _m: None))
        from tandem.training.t5_adapter import T5AdapterRun

        return T5AdapterRun(Path(base_dir), cfg, echo or (lambda _m: None), progress).run(new_items, old_items,
                                                                                          Path(out), base_ref)
    finally:
        torch.set_num_threads(threads)
