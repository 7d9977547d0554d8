"""Settings of the item stream: broker address, topics, consumer group and Kafka security.

A separate pydantic-settings class rather than fields on :class:`tandem.config.Settings`:
the streams package owns its Kafka client options, and the Helm chart already sets these
``TANDEM_KAFKA_*`` variables on the ingest pod only. ``extra="ignore"`` is deliberate here
(the project's convention is ``forbid``): the environment also carries the *other*
``TANDEM_*`` variables that the main ``Settings`` reads (``TANDEM_HOME``, ``TANDEM_DEVICE``…),
and refusing them would make every consumer fail to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from tandem.streams.poisoning import PoisoningPolicy


class StreamSettings(BaseSettings):
    """Item-stream settings. Environment variable = ``TANDEM_`` + field name in upper case."""

    model_config = SettingsConfigDict(env_prefix="TANDEM_", extra="ignore", validate_default=True)

    home: Path = Field(default=Path(".tandem"))
    """Root folder for local artifacts; the catalog store and live index live under it."""

    kafka_bootstrap: str | None = None
    """Kafka bootstrap servers (``host:port[,host:port]``); unset means the JSONL file source."""

    items_topic: str = "tandem.items"
    """Topic of item events (key = item_id)."""

    dlq_topic: str = "tandem.items.dlq"
    """Dead-letter topic; malformed events go there with the reason in the headers."""

    consumer_group: str = "tandem-ingest"
    """Consumer group of the ingest consumer (the chart passes ``--group``)."""

    feedback_topic: str = "tandem.feedback"
    """Topic of feedback events (impressions, clicks, purchases; key = request_id)."""

    feedback_dlq_topic: str = "tandem.feedback.dlq"
    """Dead-letter topic of feedback records the replay refuses."""

    feedback_group: str = "tandem-feedback"
    """Consumer group of ``tandem stream feedback`` (the replay into the feedback store)."""

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How clients talk to the brokers."""

    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism, with the ``SASL_*`` protocols."""

    kafka_sasl_username: str | None = None
    """SASL user name."""

    kafka_sasl_password: SecretStr | None = None
    """SASL password (kept out of logs and reprs)."""

    kafka_ssl_cafile: Path | None = None
    """CA bundle that signed the brokers' certificates; unset means the system trust store."""

    kafka_ssl_certfile: Path | None = None
    """Client certificate for mTLS."""

    kafka_ssl_keyfile: Path | None = None
    """Private key of the client certificate."""

    poisoning_action: Literal["quarantine", "flag", "dlq", "off"] = "quarantine"
    """What ingest does with items the poisoning detector flags (:mod:`tandem.streams.poisoning`,
    which explains the default): ``quarantine`` stores but does not index, ``flag`` indexes a
    neutralised copy, ``dlq`` refuses to the dead-letter topic with reason
    ``poisoning:<rule>``, ``off`` skips detection."""

    poisoning_term_cap: int | None = Field(default=3, ge=1)
    """Per-field cap on a term's occurrences in indexed text (every item); unset = no cap."""

    def poisoning_policy(self) -> PoisoningPolicy:
        """The detector policy these settings describe (thresholds at their documented defaults)."""
        from tandem.streams.poisoning import PoisoningPolicy

        return PoisoningPolicy(action=self.poisoning_action, term_cap=self.poisoning_term_cap)

    @property
    def store_path(self) -> Path:
        """Default catalog store: ``<home>/catalog/catalog.sqlite``."""
        return self.home / "catalog" / "catalog.sqlite"

    @property
    def feedback_store_path(self) -> Path:
        """Default feedback store: ``<home>/feedback/feedback.sqlite``."""
        return self.home / "feedback" / "feedback.sqlite"

    @property
    def index_dir(self) -> Path:
        """Default live BM25 index: ``<home>/indexes/bm25`` (the one ``tandem index`` builds)."""
        return self.home / "indexes" / "bm25"

    def kafka_client_config(self) -> dict[str, Any]:
        """Connection and security options shared by kafka-python producers and consumers."""
        conf: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL_"):
            conf["sasl_mechanism"] = self.kafka_sasl_mechanism or "PLAIN"
            conf["sasl_plain_username"] = self.kafka_sasl_username
            conf["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            )
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            for key, value in (
                ("ssl_cafile", self.kafka_ssl_cafile),
                ("ssl_certfile", self.kafka_ssl_certfile),
                ("ssl_keyfile", self.kafka_ssl_keyfile),
            ):
                if value is not None:
                    conf[key] = str(value)
        return conf
