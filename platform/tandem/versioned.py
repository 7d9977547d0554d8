"""Versioned JSON files, checksums and format-version checks: one way for every artifact.

A leaf module (standard library and :mod:`tandem.errors` only), so any layer can use it
without pulling anything else in. Tandem's on-disk formats (model, adapter and PEFT
manifests, ID maps, index metadata, registry manifests, catalog snapshots) all carry a
``format_version`` ``MAJOR.MINOR``: a reader accepts any minor of its own major and drops
keys it does not know with a warning (so an older server reads a newer writer's file), and
refuses another major with :class:`~tandem.errors.CorruptArtifact` naming the file. Files
listed in a manifest are checked by SHA-256, streamed in 1 MiB blocks.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from tandem.errors import CorruptArtifact, NotFound

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
"""The file name of every folder artifact's manifest."""

_BLOCK = 1 << 20


def sha256_stream(f: IO[bytes], copy_to: IO[bytes] | None = None) -> tuple[str, int]:
    """Hex SHA-256 and byte count of a binary stream read to its end (copied to ``copy_to``
    on the way when given, so a download is checked without reading it twice)."""
    h = hashlib.sha256()
    n = 0
    for block in iter(lambda: f.read(_BLOCK), b""):
        h.update(block)
        n += len(block)
        if copy_to is not None:
            copy_to.write(block)
    return h.hexdigest(), n


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    with open(path, "rb") as f:
        return sha256_stream(f)[0]


def file_checksums(directory: Path, files: Iterable[Path]) -> dict[str, str]:
    """``{path relative to directory (/-separated): sha256}`` of ``files``, the manifest's
    ``files`` entry (the manifest itself is never listed)."""
    return {p.relative_to(directory).as_posix(): sha256_file(p)
            for p in sorted(files) if p.is_file() and p.name != MANIFEST}


def verify_checksums(directory: Path, files: Any, required: str) -> None:
    """Check every ``{name: sha256}`` of a manifest against the files in ``directory``.

    Refuses a manifest without ``required`` (the weights file the kind needs), a name that
    points outside the folder, a missing file and a checksum mismatch.
    """
    if not isinstance(files, dict) or required not in files:
        raise CorruptArtifact(f"{directory}/{MANIFEST} lists no {required}")
    for name, digest in files.items():
        path = directory / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise CorruptArtifact(f"manifest lists a file outside the folder: {name!r}")
        if not path.is_file():
            raise CorruptArtifact(f"{directory} is missing `{name}` listed in its manifest")
        if sha256_file(path) != digest:
            raise CorruptArtifact(f"`{name}` in {directory} fails its checksum: the file is corrupted or was changed")


def same_major(found: object, supported: str) -> bool:
    """Whether format version ``found`` has the major of ``supported`` (``"1.3"`` vs ``"1.0"``)."""
    major = str(found or "").split(".")[0]
    return major.isdigit() and major == supported.split(".")[0]


def newer_minor(found: object, supported: str) -> bool:
    """Whether ``found`` is a later minor of ``supported``'s major (its extra keys are expected)."""
    _, _, minor = str(found or "").partition(".")
    _, _, mine = supported.partition(".")
    return same_major(found, supported) and minor.isdigit() and mine.isdigit() and int(minor) > int(mine)


def check_format_version(found: object, supported: str, where: object, what: str = "format") -> None:
    """:class:`CorruptArtifact` naming ``where`` unless ``found`` has ``supported``'s major."""
    if not same_major(found, supported):
        raise CorruptArtifact(f"{where}: {what} {found} is not readable by this Tandem (it reads "
                              f"{supported.split('.')[0]}.x)")


def drop_unknown_keys(doc: dict[str, Any], known: Iterable[str], where: object) -> dict[str, Any]:
    """``doc`` without the keys not in ``known``, logging the dropped ones once."""
    known = set(known)
    unknown = set(doc) - known
    if not unknown:
        return doc
    log.warning("%s: ignoring unknown keys %s (written by a newer Tandem?)", where, sorted(unknown))
    return {k: v for k, v in doc.items() if k in known}


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object at ``path``; :class:`CorruptArtifact` naming ``what`` when it is
    missing, unreadable or not an object."""
    if not path.is_file():
        raise CorruptArtifact(f"{path.parent} has no {path.name}; not a Tandem {what}")
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise CorruptArtifact(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CorruptArtifact(f"{path} is not a JSON object; not a Tandem {what}")
    return body


def read_versioned_json(path: Path, *, fmt: str, fmt_version: str, what: str) -> dict[str, Any]:
    """Parse the JSON object at ``path`` and check its ``format`` and major ``format_version``.

    Every versioned Tandem file with a ``format`` name (model and adapter manifests, adapter
    specs) goes through this, so they refuse a missing, unreadable, foreign or too-new file
    alike: :class:`CorruptArtifact` naming ``what`` and the path.
    """
    body = read_json_object(path, what)
    if body.get("format") != fmt:
        raise CorruptArtifact(f"{path} is not a `{fmt}` {what}")
    version = str(body.get("format_version", ""))
    if not same_major(version, fmt_version):
        raise CorruptArtifact(f"{path} has format_version {version!r}; this Tandem reads {fmt_version[0]}.x")
    return body


def read_versioned_manifest(directory: Path, *, fmt: str, fmt_version: str, known_keys: set[str],
                            what: str) -> dict[str, Any]:
    """Parse ``directory/manifest.json`` (see :func:`read_versioned_json`).

    Shared by model and adapter folders (``what`` names the kind in messages). Keys this
    version does not know are dropped with a warning, so a newer writer's extras never
    change what is loaded.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise NotFound(f"{what} folder `{directory}` does not exist")
    path = directory / MANIFEST
    manifest = read_versioned_json(path, fmt=fmt, fmt_version=fmt_version, what=f"{what} folder manifest")
    return drop_unknown_keys(manifest, known_keys, f"{what} manifest {path}")
