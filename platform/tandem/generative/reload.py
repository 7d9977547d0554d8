"""Hot reload: serve the registry's current base model + adapter, swapping without dropping requests.

:class:`HotSwapRetriever` is a :class:`~tandem.retriever.Retriever` whose model comes from
the registry's ``current`` pointers of ``base-model`` and ``adapter``. A watcher thread
polls the two pointers (two small reads) every ``interval_s``; when either moved it builds
the new :class:`~tandem.generative.retriever.GenerativeRetriever` *off to the side*
(verify checksums, load, merge the adapter, build the extended trie) while requests keep
being answered by the old one, then swaps one reference. A request holds the retriever it
started on until it returns, so in-flight requests finish on the old model; the old one is
closed (GPU memory freed) when its last request has returned.

Which adapter goes with which base: an adapter is served only when its registry manifest
names the current base as a parent (an adapter trained on last month's base is skipped and
the base is served alone until a new adapter arrives); the weights fingerprint is checked
again when it is attached. A version that fails to load (corrupt, wrong base) is logged,
counted and skipped, and serving stays on what it had: a broken publish never takes the
service down. :meth:`version` names both registry versions, so result-cache keys change
with every swap.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from tandem.errors import CorruptArtifact, InvalidInput, NotFound, TandemError
from tandem.retriever import Hit, Retriever

log = logging.getLogger(__name__)

RELOADS = Counter("tandem_generative_reloads", "Model swaps of the hot-reloading generative retriever.",
                  ["outcome"])


@dataclass
class _Slot:
    """One loaded retriever and the requests currently running on it."""

    retriever: Any
    base: str
    adapter: str | None
    in_flight: int = 0
    retired: bool = False


class HotSwapRetriever(Retriever):
    """The registry's current generative model, reloaded when the ``current`` pointers move."""

    name = "generative"

    def __init__(self, registry: Any, *, interval_s: float = 30.0, watch: bool = True,
                 cache_dir: str | Path | None = None, **retriever_options: Any) -> None:
        """Load the current base (+ its adapter) now; with ``watch``, poll every ``interval_s``.

        ``registry`` is a :class:`~tandem.registry.Registry` or its URI. ``retriever_options``
        go to :class:`GenerativeRetriever` (``device``, ``num_beams``, ``normalize``...).
        ``cache_dir`` holds downloaded versions when the registry is not on the local disk.
        """
        from tandem.registry import Registry

        if interval_s <= 0:
            raise InvalidInput(f"`interval_s` must be > 0, got {interval_s}")
        self.registry = registry if isinstance(registry, Registry) else Registry(str(registry))
        self.interval_s = float(interval_s)
        self.options = retriever_options
        self._tmp = tempfile.TemporaryDirectory(prefix="tandem-models-") if cache_dir is None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()  # one build at a time (watcher vs AdminService.Reload)
        self._failed: set[tuple[str, str | None]] = set()
        self._stop = threading.Event()
        self.swaps = 0
        base, adapter = self._wanted()
        self._slot = self._build(base, adapter)
        self._version = _describe(self._slot)
        self._thread: threading.Thread | None = None
        if watch:
            self._thread = threading.Thread(target=self._watch, name="tandem-model-watch", daemon=True)
            self._thread.start()

    # -- what should be served --------------------------------------------------------------

    def _wanted(self) -> tuple[str, str | None]:
        """(base version, adapter version or ``None``) the pointers say should be served."""
        from tandem.registry import ArtifactKind

        base = self.registry.current(ArtifactKind.BASE_MODEL)
        if base is None:
            raise NotFound(f"no current base-model in the registry at {self.registry.uri}")
        adapter = self.registry.current(ArtifactKind.ADAPTER)
        if adapter is not None:
            try:
                parents = self.registry.manifest(ArtifactKind.ADAPTER, adapter).parents
            except (CorruptArtifact, NotFound) as exc:
                log.error("adapter:%s is unreadable (%s); serving the base alone", adapter, exc)
                return base, None
            if f"{ArtifactKind.BASE_MODEL.value}:{base}" not in parents:
                log.warning("current adapter:%s was trained on %s, not on base-model:%s; serving the base alone",
                            adapter, parents, base)
                adapter = None
        return base, adapter

    def _local(self, kind: Any, version: str) -> Path:
        """A verified local folder of ``kind:version`` (the registry's own, or a download)."""
        art = self.registry.get(kind, version)  # verifies every checksum
        if art.local_path is not None:
            return art.local_path
        dest = self.cache_dir / kind.value / version
        if not dest.is_dir():
            # Download beside, then rename: an interrupted download never looks complete.
            part = dest.with_name(dest.name + ".part")
            if part.exists():
                shutil.rmtree(part)
            self.registry.download(kind, version, part)
            os.replace(part, dest)
        return dest

    def _build(self, base: str, adapter: str | None) -> _Slot:
        from tandem.generative.loading import load_retriever
        from tandem.registry import ArtifactKind

        base_dir = self._local(ArtifactKind.BASE_MODEL, base)
        adapter_dir = self._local(ArtifactKind.ADAPTER, adapter) if adapter else None
        retriever = load_retriever(base_dir, adapter=adapter_dir, **self.options)
        retriever.name = self.name
        return _Slot(retriever, base, adapter)

    # -- swapping ---------------------------------------------------------------------------

    def reload(self) -> bool:
        """Check the pointers now and swap if they moved; ``True`` when a new model is served.

        Also what ``AdminService/Reload`` calls. Never raises for a bad artifact: it is
        logged, counted and skipped, and the current model stays.
        """
        with self._reload_lock:
            try:
                base, adapter = self._wanted()
            except TandemError as exc:
                log.error("registry check failed (%s); keeping %s", exc, self.version())
                RELOADS.labels("registry_error").inc()
                return False
            current = self._slot
            if (base, adapter) == (current.base, current.adapter) or (base, adapter) in self._failed:
                return False
            try:
                fresh = self._build(base, adapter)
            except TandemError as exc:
                self._failed.add((base, adapter))
                log.error("cannot load base-model:%s adapter:%s (%s); keeping %s", base, adapter, exc, self.version())
                RELOADS.labels("refused").inc()
                return False
            with self._lock:
                old, self._slot = self._slot, fresh
                self._version = _describe(fresh)
                old.retired = True
                idle = old.in_flight == 0
            self.swaps += 1
            RELOADS.labels("swapped").inc()
            log.info("now serving %s (was %s)", self.version(), _describe(old))
            if idle:
                old.retriever.close()
            return True

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.reload()
            except Exception:  # the watcher must survive anything; serving goes on regardless
                log.exception("model watcher: unexpected error")

    def _acquire(self) -> _Slot:
        with self._lock:
            slot = self._slot
            slot.in_flight += 1
            return slot

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            slot.in_flight -= 1
            close = slot.retired and slot.in_flight == 0
        if close:
            slot.retriever.close()

    # -- the Retriever interface ------------------------------------------------------------

    def retrieve(self, queries: Any, k: int) -> list[list[Hit]]:
        """Answer on the model current when the call started (see the module docstring)."""
        slot = self._acquire()
        try:
            return slot.retriever.retrieve(queries, k)
        finally:
            self._release(slot)

    @property
    def score_names(self) -> tuple[str, ...]:  # type: ignore[override]  # read-only view of the base class attribute
        """The served model's :attr:`~tandem.retriever.Retriever.score_names` (v1 T5 models: none)."""
        return tuple(self._slot.retriever.score_names)

    def score_items(self, query: str, item_ids: Any) -> list[tuple[float, ...] | None]:
        """Score on the model current when the call started, like :meth:`retrieve`."""
        slot = self._acquire()
        try:
            return slot.retriever.score_items(query, item_ids)
        finally:
            self._release(slot)

    def version(self) -> str:
        """``base-model:<v>+adapter:<v>`` (or ``+adapter:none``): changes with every swap.

        A stored string (the interface asks for a cheap, lock-free call)."""
        return self._version

    def close(self) -> None:
        """Stop watching and free the model. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval_s + 5)
        with self._lock:
            slot = self._slot
            slot.retired = True
            idle = slot.in_flight == 0
        if idle:
            slot.retriever.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _describe(slot: _Slot) -> str:
    return f"base-model:{slot.base}+adapter:{slot.adapter or 'none'}"
