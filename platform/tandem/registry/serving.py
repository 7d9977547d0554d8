"""A registry view for servers: ``current`` names the version :meth:`Registry.resolve_current`
would serve, so a corrupt ``current`` falls back to the last good version at start-up too.

A server that follows the registry (``tandem serve generative --registry``, the hot-swapping
generative source) reads the ``current`` pointers and then loads those versions. With a
corrupt current version (a checksum mismatch, a missing file) a running server keeps its
model, but one that starts, or restarts, had nothing to keep and failed to start: a bad
promotion took the service down at the next rollout. Through :class:`ServingRegistry` it
starts on the newest good version of the pointer's history instead, with an error in the log
(``current base-model is corrupt; serving the previous good version ...``) and the refusal
counted in ``tandem_registry_corrupt_artifacts_total``.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from tandem.errors import CorruptArtifact
from tandem.registry.manifest import ArtifactKind
from tandem.registry.store import Registry

log = logging.getLogger(__name__)


class ServingRegistry(Registry):
    """A :class:`Registry` whose :meth:`current` is the verified version to serve.

    Verifying reads every file of a version, so the answer is remembered per pointer content
    and recomputed only when the pointer changes (polling ``current`` stays two small reads).
    """

    def __init__(self, uri: str | Path | None = None) -> None:
        super().__init__(uri)
        self._resolved: dict[ArtifactKind, tuple[dict, str]] = {}
        self._mu = threading.Lock()

    def current(self, kind: ArtifactKind | str) -> str | None:
        """The newest verifiable version of ``current`` and its history (``None``: nothing
        promoted). When none verifies, the pointer's own version, so loading it fails with the
        checksum error (:class:`~tandem.errors.CorruptArtifact`) that names what is wrong."""
        k = ArtifactKind.parse(kind)
        pointer = self.pointer(k)
        if pointer is None:
            return None
        with self._mu:
            known = self._resolved.get(k)
            if known is not None and known[0] == pointer:
                return known[1]
            try:
                version = self.resolve_current(k).manifest.version
            except CorruptArtifact as exc:
                log.error("no verifiable %s in the registry at %s: %s", k.value, self.uri, exc)
                version = pointer["version"]
            self._resolved[k] = (pointer, version)
            return version


__all__ = ["ServingRegistry"]
