"""Artifact kinds and the manifest every registered artifact version carries."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tandem.errors import CorruptArtifact, InvalidInput
from tandem.versioned import same_major

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "1.0"
"""Format version written by this code; a newer *minor* version still loads."""
MANIFEST_NAME = "tandem-artifact.json"
"""The manifest file in each version folder (a name no artifact uses for its own files)."""


class ArtifactKind(StrEnum):
    """What an artifact is. Serving resolves one ``current`` version per kind."""

    BASE_MODEL = "base-model"
    ADAPTER = "adapter"
    ID_MAP = "id-map"
    INDEX = "index"
    SNAPSHOT = "snapshot"
    FUSION = "fusion"
    """A learned fusion model, published with the base model it was trained on as its parent."""

    @classmethod
    def parse(cls, value: str | ArtifactKind) -> ArtifactKind:
        """The kind named ``value``; :class:`InvalidInput` naming the choices otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise InvalidInput(f"`kind` must be one of {', '.join(k.value for k in cls)}, got {value!r}") from None


class FileEntry(BaseModel):
    """Checksum and size of one file of an artifact."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Manifest(BaseModel):
    """``tandem-artifact.json`` of one artifact version; written last, so its presence means complete.

    ``parents`` are references ``kind:version`` to the artifacts this one was made from
    (an adapter's base model and ID map, an index's snapshot), which is what lineage and
    cache keys follow.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    format_version: str = MANIFEST_FORMAT
    kind: ArtifactKind
    version: str
    created: str
    """UTC time of publication, ISO 8601."""
    parents: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    files: dict[str, FileEntry]
    """Path relative to the version folder (``/``-separated) → checksum and size."""

    @model_validator(mode="before")
    @classmethod
    def _check_format(cls, data: Any) -> Any:
        if isinstance(data, dict):
            fmt = str(data.get("format_version", MANIFEST_FORMAT))
            if not same_major(fmt, MANIFEST_FORMAT):
                raise ValueError(f"manifest format {fmt} is not readable by this version ({MANIFEST_FORMAT})")
            unknown = set(data) - set(cls.model_fields)
            if unknown:
                log.warning("manifest: ignoring unknown keys %s (written by a newer version?)", sorted(unknown))
        return data

    @field_validator("parents")
    @classmethod
    def _check_parents(cls, value: list[str]) -> list[str]:
        for ref in value:
            parse_ref(ref)
        return value

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> Manifest:
        """Parse a manifest; anything unreadable is :class:`CorruptArtifact` naming ``where``."""
        try:
            return cls.model_validate_json(text)
        except ValueError as e:
            raise CorruptArtifact(f"{where}: unreadable manifest ({e})") from None

    @property
    def ref(self) -> str:
        """``kind:version`` of this artifact."""
        return f"{self.kind.value}:{self.version}"


def parse_ref(ref: str) -> tuple[ArtifactKind, str]:
    """Split ``kind:version``; :class:`InvalidInput` on anything else."""
    kind, sep, version = ref.partition(":")
    if not sep or not version:
        raise InvalidInput(f"`parents` entries must look like kind:version, got {ref!r}")
    return ArtifactKind.parse(kind), version
