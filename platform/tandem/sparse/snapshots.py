"""Index snapshots: the single writer publishes its Lucene commits for readers on other nodes.

Lucene (like SQLite's WAL) is not safe on a network filesystem, so the ingest consumer keeps
the live index on a ReadWriteOnce volume, and sparse readers elsewhere serve *copies*:

- :class:`SnapshotPublisher` (beside the writer) checks every ``every_s`` for a new commit,
  hard-links the files of the latest commit into a staging folder (Lucene files are written
  once and never changed, so the links pin one consistent commit even while the writer goes
  on committing and deleting old files; a file deleted before it was linked means a newer
  commit exists, which is staged instead), publishes the folder as a new ``index`` version in
  the artifact registry (a local path or the object store models use; every file's sha256
  in the manifest, written last), makes it ``current`` and deletes all but the ``keep``
  newest versions.
- :class:`tandem.sparse.snapshot_reader.SnapshotIndex` (in the sparse server) polls
  ``current``, fetches a new version beside the one it serves, verifies it, opens it and
  swaps it in.

One publisher per registry (one writer per index), so versions need no coordination.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from tandem.errors import InvalidInput, Unavailable
from tandem.registry.manifest import ArtifactKind
from tandem.registry.store import Registry
from tandem.sparse._java import java, java_errors, jpath
from tandem.sparse.config import META_FILE

log = logging.getLogger(__name__)

KIND = ArtifactKind.INDEX
"""Registry kind of index snapshots."""
COMMIT_METRIC = "lucene_commit"
"""Manifest metric naming the Lucene commit version a snapshot holds."""
STAGE_ATTEMPTS = 5
"""Commits tried in a row when each is replaced by a newer one while being staged."""


def snapshot_registry(uri: str | Path | None) -> Registry:
    """The registry snapshots go to: ``uri``, or with ``None``/``"default"`` the artifact
    registry of this installation (``TANDEM_ARTIFACTS_URI``, else ``<home>/registry``)."""
    return Registry(None if uri in (None, "", "default") else uri)


@java_errors("reading the latest Lucene commit")
def latest_commit(index_dir: Path) -> tuple[int, list[str]]:
    """Version and file names (``segments_N`` included) of the latest commit at ``index_dir``."""
    j = java()
    directory = j.FSDirectory.open(jpath(index_dir))
    try:
        infos = j.SegmentInfos.readLatestCommit(directory)
        return int(infos.getVersion()), sorted(str(f) for f in infos.files(True).toArray())
    finally:
        directory.close()


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        shutil.copy2(src, dst)  # another filesystem, or links not allowed: a copy (still write-once files)


def stage_commit(index_dir: Path, staging: Path) -> tuple[int, Path]:
    """The latest commit of ``index_dir`` pinned in a new folder under ``staging``: its
    version and the folder (``META_FILE`` included). See the module docstring."""
    for _ in range(STAGE_ATTEMPTS):
        version, files = latest_commit(index_dir)
        out = staging / f"commit-{version}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        try:
            for name in [*files, META_FILE]:
                _link_or_copy(index_dir / name, out / name)
            return version, out
        except FileNotFoundError:  # the writer committed again and dropped this commit's files
            shutil.rmtree(out, ignore_errors=True)
    raise Unavailable(f"index {index_dir} changed under {STAGE_ATTEMPTS} snapshot attempts in a row; retrying later")


def prune(registry: Registry, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest snapshot versions (never ``current``); returns the deleted."""
    current = registry.current(KIND)
    old = [v for v in registry.versions(KIND)[:-keep] if v != current]
    for version in old:
        registry.delete(KIND, version)
    return old


class SnapshotPublisher:
    """Publishes the index at ``index_dir`` to ``registry`` whenever it has a new commit,
    checked every ``every_s`` on a daemon thread (:meth:`start`), and once more on
    :meth:`stop`; keeps the ``keep`` newest snapshots. ``with`` starts and stops it."""

    def __init__(self, index_dir: str | Path, registry: Registry | str | None = None, *, every_s: float = 10.0,
                 keep: int = 3, staging: str | Path | None = None) -> None:
        if every_s <= 0:
            raise InvalidInput(f"`every_s` (snapshot interval) must be > 0, got {every_s}")
        if keep < 1:
            raise InvalidInput(f"`keep` (snapshots kept) must be >= 1, got {keep}")
        self.index_dir = Path(index_dir)
        self.registry = registry if isinstance(registry, Registry) else snapshot_registry(registry)
        self.every_s, self.keep = every_s, keep
        self.staging = Path(staging) if staging else self.index_dir.with_name(self.index_dir.name + ".snapshot-staging")
        self.published: str | None = None
        """The version this publisher last made current."""
        self._commit: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mu = threading.Lock()

    def publish_once(self) -> str | None:
        """Publish the latest commit if it was not published yet; the new version, or ``None``
        when there is no index yet or nothing changed."""
        if not (self.index_dir / META_FILE).is_file():
            return None
        with self._mu:
            version, folder = stage_commit(self.index_dir, self.staging)
            try:
                if version == self._commit:
                    return None
                published = self.registry.publish(KIND, folder, metrics={COMMIT_METRIC: float(version)}, promote=True)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            self._commit, self.published = version, published
            deleted = prune(self.registry, self.keep)
        log.info("index snapshot %s published (Lucene commit %d); %d old snapshots deleted",
                 published, version, len(deleted))
        return published

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._publish_logged()

    def _publish_logged(self) -> None:
        try:
            self.publish_once()
        except Exception:  # noqa: BLE001 - the writer must go on; the next interval retries
            log.exception("index snapshot of %s failed; retrying in %.1f s", self.index_dir, self.every_s)

    def start(self) -> SnapshotPublisher:
        """Start the publishing thread (publishes at once, then every ``every_s``)."""
        self._publish_logged()
        self._thread = threading.Thread(target=self._run, name="tandem-index-snapshots", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread, then publish the last commit (what a restarted reader should get)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(30.0, self.every_s))
        self._publish_logged()

    def __enter__(self) -> SnapshotPublisher:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
