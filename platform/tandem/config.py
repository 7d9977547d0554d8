"""Process-wide settings, read from ``TANDEM_*`` environment variables.

Every field has a default that runs on one machine (the embedded defaults of
ARCHITECTURE.md); pointing a field at a real service switches that part over.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Tandem settings. Environment variable = ``TANDEM_`` + field name in upper case."""

    model_config = SettingsConfigDict(env_prefix="TANDEM_", extra="forbid", validate_default=True)

    home: Path = Field(default=Path(".tandem"))
    """Root folder for local artifacts: indexes, models, registry, infrastructure binaries."""

    java_home: Path | None = None
    """JDK (>= 21) that Pyserini's JVM uses; found automatically when unset (see ``tandem doctor``)."""

    kafka_bootstrap: str | None = None
    """Kafka bootstrap servers (``host:port[,host:port]``); unset means the JSONL file source."""

    items_topic: str = "tandem.items"
    """Kafka topic carrying item events (key = item_id)."""

    dlq_topic: str = "tandem.items.dlq"
    """Dead-letter topic for malformed item events; the reason travels in the headers."""

    redis_url: str | None = None
    """Redis URL for the result cache (``redis://host:port/0``); unset means in-process LRU."""

    connect_timeout_s: float = Field(default=3.0, gt=0, le=60)
    """How long a reachability check (Kafka, Redis) waits before reporting a service as down."""

    device: str = "auto"
    """Torch device for the generative model: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``."""

    data: Path | None = None
    """Folder of the benchmark datasets (``homedepot/``, ``cacm/``); unset means ``../shared/data``
    beside the repository, or ``./shared/data`` (see :func:`tandem.catalog.datasets.data_root`)."""

    seed: int = 13
    """Random seed used by training, ID building and benchmarks unless a command overrides it."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once from the environment."""
    return Settings()
