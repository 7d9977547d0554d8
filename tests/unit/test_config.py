"""Settings: TANDEM_* environment, typed fields, unknown keys refused."""

import pytest
from pydantic import ValidationError

from tandem.config import Settings


def test_env_prefix_and_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("TANDEM_CONNECT_TIMEOUT_S", "1.5")
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.connect_timeout_s == 1.5
    assert s.redis_url is None


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(ValidationError, match="no_such_field"):
        Settings(no_such_field=1)  # type: ignore[call-arg]


def test_bad_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_CONNECT_TIMEOUT_S", "-1")
    with pytest.raises(ValidationError, match="connect_timeout_s"):
        Settings()
