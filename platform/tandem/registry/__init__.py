"""Registry of versioned artifacts (base models, adapters, ID maps, indexes, catalog snapshots,
the learned fusion models trained on a base: :mod:`tandem.registry.fusion`)
under an fsspec URI, each with a checksummed manifest and an atomically updated ``current``
pointer per kind."""

from tandem.registry.manifest import ArtifactKind, FileEntry, Manifest
from tandem.registry.store import Artifact, Registry, default_registry_uri

__all__ = ["Artifact", "ArtifactKind", "FileEntry", "Manifest", "Registry", "default_registry_uri"]
