"""A BM25 source serving the newest verified index snapshot (readers on other nodes).

:class:`SnapshotIndex` follows the ``current`` index snapshot that
:class:`~tandem.sparse.snapshots.SnapshotPublisher` makes in the artifact registry. Its
:meth:`~SnapshotIndex.refresh` (the :class:`~tandem.retriever.Retriever` refresh capability,
called every ``poll_s`` by a daemon thread and by the Admin ``Reload``):

1. reads the pointer; nothing to do when it names the version served (or one refused before);
2. fetches the version into ``<local_dir>/.<version>.partial`` beside the served one — a file
   whose name, size and checksum equal one of the served snapshot is hard-linked instead of
   downloaded (Lucene segments are immutable, so a new commit mostly repeats the old files) —
   checking each file's sha256 against the manifest; a missing or damaged file refuses the
   version (:class:`~tandem.errors.CorruptArtifact`, logged with the reason and counted in
   ``tandem_index_snapshots_refused_total``) and the served snapshot stays;
3. renames the folder to ``<local_dir>/<version>``, opens it read-only (a snapshot Lucene
   cannot open is refused the same way), swaps it in, closes the old searcher and deletes
   all but the ``keep`` newest local copies.

Until a first snapshot is served every search fails with UNAVAILABLE naming the registry.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from prometheus_client import Counter

from tandem.errors import CorruptArtifact, InvalidInput, TandemError, Unavailable
from tandem.registry.manifest import Manifest
from tandem.registry.store import Registry
from tandem.retriever import Hit, Retriever, validate_queries
from tandem.sparse.snapshots import KIND, snapshot_registry

log = logging.getLogger(__name__)

REFUSED = Counter("tandem_index_snapshots_refused", "Index snapshots refused by a reader (damaged, partial, unopenable).")
REMEMBER_REFUSED = 16
"""Refused versions remembered (not fetched again); older ones are forgotten."""


def _open_read_only(folder: Path) -> Retriever:
    from tandem.sparse.retriever import SparseRetriever

    return SparseRetriever(folder, writable=False)


class SnapshotIndex(Retriever):
    """Serves the registry's current index snapshot; see the module docstring."""

    def __init__(self, registry: Registry | str | None, local_dir: str | Path, *, name: str = "bm25",
                 poll_s: float | None = 2.0, keep: int = 2,
                 open_index: Callable[[Path], Retriever] = _open_read_only) -> None:
        if keep < 1:
            raise InvalidInput(f"`keep` (local snapshots) must be >= 1, got {keep}")
        if poll_s is not None and poll_s <= 0:
            raise InvalidInput(f"`poll_s` must be > 0, got {poll_s}")
        self.registry = registry if isinstance(registry, Registry) else snapshot_registry(registry)
        self.local_dir = Path(local_dir)
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.name, self.keep = name, keep
        self._open_index = open_index
        self._inner: Retriever | None = None
        self.served: str | None = None
        """The snapshot version being served."""
        self._served_manifest: Manifest | None = None
        self._refused: list[str] = []
        self._mu = threading.Lock()
        self._closed = threading.Event()
        try:
            self.refresh()
        except TandemError as exc:  # the registry is unreachable: serve UNAVAILABLE, keep polling
            log.error("index snapshots at %s: %s; retrying", self.registry.uri, exc)
        if poll_s is not None:
            threading.Thread(target=self._poll, args=(poll_s,), name="tandem-bm25-snapshots", daemon=True).start()

    def _poll(self, every_s: float) -> None:
        while not self._closed.wait(every_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the poller must survive anything; searches go on
                log.exception("index snapshots at %s: refresh failed; retrying in %.1f s", self.registry.uri, every_s)

    # -- following the registry ----------------------------------------------------------

    def refresh(self) -> bool:
        """Serve the current snapshot if it is new and verifies; ``True`` when it was swapped in."""
        with self._mu:
            if self._closed.is_set():
                return False
            version = self.registry.current(KIND)
            if version is None or version == self.served or version in self._refused:
                return False
            try:
                manifest = self.registry.manifest(KIND, version)
                folder = self._fetch(manifest)
                inner = self._open_index(folder)
            except (TandemError, OSError) as exc:  # CorruptArtifact, NotFound, Lucene refusing it
                self._refuse(version, exc)
                return False
            inner.name = self.name
            old, self._inner = self._inner, inner
            previous, self.served, self._served_manifest = self.served, version, manifest
        log.info("index snapshot %s now served (was %s), version %s", version, previous, inner.version())
        if old is not None:
            old.close()
        self._prune_local()
        return True

    def _refuse(self, version: str, exc: BaseException) -> None:
        REFUSED.inc()
        self._refused = [*self._refused, version][-REMEMBER_REFUSED:]
        shutil.rmtree(self.local_dir / version, ignore_errors=True)
        log.error("refusing index snapshot %s from %s: %s; still serving %s", version, self.registry.uri, exc,
                  self.served or "nothing (no good snapshot yet)")

    def _fetch(self, manifest: Manifest) -> Path:
        """Download and verify ``manifest``'s files (linking unchanged ones); the final folder."""
        from tandem.versioned import sha256_stream

        reg, version = self.registry, manifest.version
        partial = self.local_dir / f".{version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        prev = self._served_manifest
        prev_dir = self.local_dir / prev.version if prev is not None else None
        src_dir = posixpath.join(reg.root, KIND.value, version)
        try:
            for rel, entry in manifest.files.items():
                if Path(rel).is_absolute() or ".." in Path(rel).parts:
                    raise CorruptArtifact(f"index:{version}: manifest names a path outside the snapshot: {rel!r}")
                target = partial / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if prev is not None and prev_dir is not None and prev.files.get(rel) == entry:
                    os.link(prev_dir / rel, target)  # the same immutable Lucene file: no transfer
                    continue
                try:
                    with reg.fs.open(posixpath.join(src_dir, rel), "rb") as f_in, target.open("wb") as f_out:
                        digest, size = sha256_stream(f_in, f_out)
                except FileNotFoundError:
                    raise CorruptArtifact(f"index:{version}: file {rel} is missing (partial snapshot)") from None
                if digest != entry.sha256 or size != entry.size:
                    raise CorruptArtifact(f"index:{version}: checksum mismatch in {rel} ({size} bytes, "
                                          f"sha256 {digest[:12]}..., manifest {entry.size} bytes, {entry.sha256[:12]}...)")
            final = self.local_dir / version
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
            return final
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _prune_local(self) -> None:
        """Delete local copies other than the ``keep`` newest (the served one always stays)."""
        copies = sorted(p for p in self.local_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        for p in copies[:-self.keep]:
            if p.name != self.served:
                shutil.rmtree(p, ignore_errors=True)

    # -- serving ---------------------------------------------------------------------------

    def _current(self) -> Retriever:
        inner = self._inner
        if inner is None:
            raise Unavailable(f"no index snapshot served yet: none published to {self.registry.uri} "
                              "(the ingest consumer publishes them) or none verified")
        return inner

    def _call(self, fn: Callable[[Retriever], Any]) -> Any:
        """``fn`` on the served index, once more on the new one if a swap closed it meanwhile."""
        inner = self._current()
        try:
            return fn(inner)
        except Unavailable:
            if self._inner is inner:
                raise
            return fn(self._current())

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """BM25 hits from the served snapshot; :class:`Unavailable` before the first one."""
        validate_queries(queries, k)
        return self._call(lambda r: r.retrieve(queries, k))

    def documents(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored fields from the served snapshot (the ``Lookup`` RPC)."""
        return self._call(lambda r: cast(Any, r).documents(item_ids))  # the served SparseRetriever

    def version(self) -> str:
        """The served index's version (index id and Lucene commit, as the live index reports it)."""
        inner = self._inner
        return inner.version() if inner is not None else "awaiting-snapshot"

    def close(self) -> None:
        """Stop polling and close the served index."""
        with self._mu:
            self._closed.set()
            inner, self._inner = self._inner, None
        if inner is not None:
            inner.close()
