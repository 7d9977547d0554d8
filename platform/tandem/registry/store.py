"""The artifact registry: immutable versions under an fsspec URI plus a ``current`` pointer per kind.

Layout under the root URI::

    <kind>/<version>/...files...      the artifact, uploaded first
    <kind>/<version>/tandem-artifact.json   the manifest, written last: present = complete
    <kind>/CURRENT.json               {"version", "history": [older good versions], "updated"}

Versions are ``YYYYMMDDTHHMMSS.ffffffZ-<8 hex>``: unique without coordination between
publishers, and :meth:`Registry.versions` lists them by time (:func:`version_key`; names from
before the microseconds, ``YYYYMMDDTHHMMSSZ-<8 hex>``, sort as that second's first microsecond).

**The pointer.** On a local filesystem, ``CURRENT.json`` is replaced atomically (write a
temporary file in the same folder, then ``os.replace``) under an exclusive ``flock``, so
``promote(..., expected=...)`` is a real compare-and-swap and readers never see a torn
pointer. On object stores (S3, GCS, ``memory://``) a single-object PUT is atomic for
readers (old or new, never torn), but fsspec exposes no conditional write, so the check in
``promote(..., expected=...)`` and the PUT are two steps: last writer wins between
concurrent promoters. Run one promoter per kind (the pipelines' promotion step) there.

**Refusal.** :meth:`Registry.get` verifies the sha256 of every file against the manifest
and raises :class:`~tandem.errors.CorruptArtifact` on any mismatch, missing or extra file.
:meth:`Registry.resolve_current` falls back to the most recent good version in the
pointer's history when ``current`` is corrupt, logs it and counts it in
``tandem_registry_corrupt_artifacts_total``, so serving keeps the previous artifact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from tandem.errors import CorruptArtifact, InvalidInput, NotFound
from tandem.registry.manifest import MANIFEST_NAME, ArtifactKind, FileEntry, Manifest, parse_ref
from tandem.versioned import sha256_stream

log = logging.getLogger(__name__)

POINTER_NAME = "CURRENT.json"
HISTORY_LEN = 10
"""Previous current versions remembered in the pointer, the fallbacks of :meth:`Registry.resolve_current`."""

CORRUPT = Counter(
    "tandem_registry_corrupt_artifacts", "Artifacts refused because a checksum or manifest check failed.", ["kind"]
)


class _Unset:
    """Type of :data:`UNSET`: "no expectation" for :meth:`Registry.promote`."""


UNSET = _Unset()


@dataclass(frozen=True)
class Artifact:
    """A verified artifact version: its manifest and where its files are."""

    manifest: Manifest
    uri: str
    """fsspec URI of the version folder."""
    local_path: Path | None
    """The folder itself when the registry is on the local filesystem (no copy needed)."""


def default_registry_uri() -> str:
    """``TANDEM_ARTIFACTS_URI`` when set (the chart's object store), else ``<TANDEM_HOME>/registry``."""
    uri = os.environ.get("TANDEM_ARTIFACTS_URI")
    if uri:
        return uri
    from tandem.config import get_settings

    return str(get_settings().home / "registry")


_last_stamp = ""
_stamp_lock = threading.Lock()


def _new_version() -> str:
    """A version name with microseconds: two versions published within one second keep their
    order (snapshots are; pruning keeps "the newest" by this order). Within this process a
    clock that has not moved on (or went back) still gives a later stamp."""
    global _last_stamp
    with _stamp_lock:
        now = datetime.now(UTC)
        stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
        if stamp <= _last_stamp:
            last = datetime.strptime(_last_stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
            stamp = (last + timedelta(microseconds=1)).strftime("%Y%m%dT%H%M%S.%fZ")
        _last_stamp = stamp
    return f"{stamp}-{secrets.token_hex(4)}"


def version_key(version: str) -> tuple[str, str]:
    """Sort key putting versions in publish order: the stamp with microseconds (``.000000`` for
    names from before they were added), then the rest. Other names sort by themselves."""
    stamp, sep, rest = version.partition("Z-")
    if not sep:
        return (version, "")
    if "." not in stamp:
        stamp += ".000000"
    return (stamp, rest)


class Registry:
    """Versioned artifacts under an fsspec ``uri`` (a plain path means the local filesystem)."""

    def __init__(self, uri: str | Path | None = None) -> None:
        import fsspec

        self.uri = str(uri) if uri is not None else default_registry_uri()
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)
        self.local = "file" in _protocols(self.fs)
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    # -- paths ---------------------------------------------------------------------------

    def _kind_dir(self, kind: ArtifactKind) -> str:
        return posixpath.join(self.root, kind.value)

    def _version_dir(self, kind: ArtifactKind, version: str) -> str:
        if not version or "/" in version or version.startswith(".") or version == POINTER_NAME:
            raise InvalidInput(f"`version` {version!r} is not a version name")
        return posixpath.join(self._kind_dir(kind), version)

    def _uri_of(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    # -- publish -------------------------------------------------------------------------

    def publish(
        self,
        kind: ArtifactKind | str,
        src_dir: str | Path,
        parents: Sequence[str] = (),
        metrics: dict[str, float] | None = None,
        *,
        promote: bool = False,
    ) -> str:
        """Upload every file under local ``src_dir`` as a new version of ``kind``; returns the version.

        ``parents`` are ``kind:version`` references that must exist in this registry. The
        manifest (with the sha256 of each file as read during upload) is written last.
        """
        k = ArtifactKind.parse(kind)
        src = Path(src_dir)
        if not src.is_dir():
            raise InvalidInput(f"`src_dir` {src} is not a folder")
        files = sorted(p for p in src.rglob("*") if p.is_file())
        if not files:
            raise InvalidInput(f"`src_dir` {src} has no files")
        if any(p.relative_to(src).as_posix() == MANIFEST_NAME for p in files):
            raise InvalidInput(f"`src_dir` must not contain a top-level {MANIFEST_NAME}; the registry writes it")
        for ref in parents:
            pk, pv = parse_ref(ref)
            if not self.fs.exists(posixpath.join(self._version_dir(pk, pv), MANIFEST_NAME)):
                raise NotFound(f"`parents` entry {ref} is not in the registry")
        version = _new_version()
        vdir = self._version_dir(k, version)
        entries: dict[str, FileEntry] = {}
        for p in files:
            rel = p.relative_to(src).as_posix()
            target = posixpath.join(vdir, rel)
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            # Hash what is uploaded, in one read: a file changing under us cannot slip through.
            with p.open("rb") as f_in, self.fs.open(target, "wb") as f_out:
                digest, size = sha256_stream(f_in, f_out)
            entries[rel] = FileEntry(sha256=digest, size=size)
        manifest = Manifest(
            kind=k, version=version, created=datetime.now(UTC).isoformat(timespec="seconds"),
            parents=list(parents), metrics=dict(metrics or {}), files=entries,
        )  # fmt: skip
        self.fs.pipe_file(posixpath.join(vdir, MANIFEST_NAME), manifest.model_dump_json(indent=2).encode())
        log.info("published %s (%d files)", manifest.ref, len(entries))
        if promote:
            self.promote(k, version)
        return version

    # -- read ----------------------------------------------------------------------------

    def versions(self, kind: ArtifactKind | str) -> list[str]:
        """Complete versions of ``kind`` (those with a manifest), oldest first."""
        kdir = self._kind_dir(ArtifactKind.parse(kind))
        if not self.fs.exists(kdir):
            return []
        out = []
        for entry in self.fs.ls(kdir, detail=True):
            name = posixpath.basename(entry["name"].rstrip("/"))
            if entry["type"] == "directory" and self.fs.exists(posixpath.join(kdir, name, MANIFEST_NAME)):
                out.append(name)
        return sorted(out, key=version_key)

    def manifest(self, kind: ArtifactKind | str, version: str) -> Manifest:
        """The manifest of ``kind``/``version`` without verifying files (cheap, for listings)."""
        k = ArtifactKind.parse(kind)
        path = posixpath.join(self._version_dir(k, version), MANIFEST_NAME)
        try:
            text = self.fs.cat_file(path)
        except FileNotFoundError:
            raise NotFound(f"{k.value}:{version} is not in the registry at {self.uri}") from None
        m = Manifest.from_json(text, f"{k.value}:{version}")
        if m.kind != k or m.version != version:
            raise CorruptArtifact(f"{k.value}:{version}: manifest names {m.ref}")
        return m

    def get(self, kind: ArtifactKind | str, version: str) -> Artifact:
        """The artifact after verifying every file's sha256; :class:`CorruptArtifact` if any differs."""
        k = ArtifactKind.parse(kind)
        m = self.manifest(k, version)
        vdir = self._version_dir(k, version)
        found = {posixpath.relpath(p, vdir) for p in self.fs.find(vdir)} - {MANIFEST_NAME}
        missing, extra = set(m.files) - found, found - set(m.files)
        if missing or extra:
            raise CorruptArtifact(f"{m.ref}: missing files {sorted(missing)}, unexpected files {sorted(extra)}")
        for rel, entry in m.files.items():
            with self.fs.open(posixpath.join(vdir, rel), "rb") as f:
                digest, size = sha256_stream(f)
            if digest != entry.sha256 or size != entry.size:
                raise CorruptArtifact(f"{m.ref}: checksum mismatch in {rel}")
        return Artifact(m, self._uri_of(vdir), Path(vdir) if self.local else None)

    def download(self, kind: ArtifactKind | str, version: str, dest: str | Path) -> Path:
        """Copy a verified artifact to local folder ``dest`` (for registries on object stores)."""
        art = self.get(kind, version)
        out = Path(dest)
        vdir = self._version_dir(art.manifest.kind, version)
        for rel, entry in art.manifest.files.items():
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open(posixpath.join(vdir, rel), "rb") as f_in, target.open("wb") as f_out:
                digest, _ = sha256_stream(f_in, f_out)
            if digest != entry.sha256:  # changed between verification and copy
                raise CorruptArtifact(f"{art.manifest.ref}: checksum mismatch in {rel} while downloading")
        return out

    def delete(self, kind: ArtifactKind | str, version: str) -> None:
        """Remove a version (retention of index snapshots); never the ``current`` one. The
        manifest goes first, so a half-deleted version is already no longer listed."""
        k = ArtifactKind.parse(kind)
        if version == self.current(k):
            raise InvalidInput(f"{k.value}:{version} is current; promote another version before deleting it")
        vdir = self._version_dir(k, version)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(posixpath.join(vdir, MANIFEST_NAME))
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(vdir, recursive=True)

    # -- the current pointer -------------------------------------------------------------

    def _pointer_path(self, kind: ArtifactKind) -> str:
        return posixpath.join(self._kind_dir(kind), POINTER_NAME)

    def pointer(self, kind: ArtifactKind | str) -> dict[str, Any] | None:
        """The raw ``CURRENT.json`` of ``kind`` (``version``, ``history``, ``updated``), or ``None``."""
        path = self._pointer_path(ArtifactKind.parse(kind))
        try:
            raw = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or not isinstance(data.get("version"), str):
                raise ValueError("no `version`")
            return data
        except ValueError as e:
            raise CorruptArtifact(f"{path}: unreadable pointer ({e})") from None

    def current(self, kind: ArtifactKind | str) -> str | None:
        """The version ``current`` points at (unverified), or ``None`` when nothing was promoted."""
        p = self.pointer(kind)
        return p["version"] if p else None

    def promote(self, kind: ArtifactKind | str, version: str, *, expected: str | None | _Unset = UNSET) -> None:
        """Point ``current`` of ``kind`` at ``version`` after verifying it.

        ``expected``: when given, the promotion happens only if ``current`` is still that
        version (``None`` = nothing promoted yet); see the module docstring for the guarantee
        on each kind of filesystem.
        """
        k = ArtifactKind.parse(kind)
        self.get(k, version)  # never point at something we would refuse to serve
        with self._pointer_lock(k):
            old = self.pointer(k)
            old_version = old["version"] if old else None
            if not isinstance(expected, _Unset) and expected != old_version:
                raise InvalidInput(f"`expected` {expected!r} is not current ({old_version!r}); someone promoted first")
            history = [v for v in ([old_version] if old_version else []) + (old or {}).get("history", []) if v != version]
            body = {"version": version, "history": history[:HISTORY_LEN], "updated": time.time()}
            self._write_pointer(k, json.dumps(body, indent=2).encode())
        log.info("promoted %s:%s (was %s)", k.value, version, old_version)

    def _write_pointer(self, kind: ArtifactKind, data: bytes) -> None:
        path = self._pointer_path(kind)
        if self.local:
            tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(posixpath.dirname(path))
        else:
            self.fs.pipe_file(path, data)

    @contextlib.contextmanager
    def _pointer_lock(self, kind: ArtifactKind) -> Iterator[None]:
        if not self.local:
            yield
            return
        import fcntl

        kdir = self._kind_dir(kind)
        os.makedirs(kdir, exist_ok=True)
        with open(posixpath.join(kdir, ".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def resolve_current(self, kind: ArtifactKind | str) -> Artifact:
        """The verified current artifact; if it is corrupt, the newest good one from the history.

        Each refused version is logged and counted; :class:`CorruptArtifact` only when no
        remembered version verifies, :class:`NotFound` when nothing was ever promoted.
        """
        k = ArtifactKind.parse(kind)
        p = self.pointer(k)
        if p is None:
            raise NotFound(f"no current {k.value} in the registry at {self.uri}")
        for i, version in enumerate([p["version"], *p.get("history", [])]):
            try:
                art = self.get(k, version)
            except (CorruptArtifact, NotFound) as e:
                CORRUPT.labels(k.value).inc()
                log.error("refusing %s:%s: %s", k.value, version, e)
                continue
            if i:
                log.error("current %s is corrupt; serving the previous good version %s", k.value, version)
            return art
        raise CorruptArtifact(f"no verifiable {k.value}: current and its history all failed their checks")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _protocols(fs: Any) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)
