"""Services side of sharded generative serving: the gateway's shard fan-out and `--shard` loading."""

from __future__ import annotations

import pytest

from tandem.errors import InvalidInput
from tandem.generative.sharding import ShardedRetriever


def test_gateway_source_is_one_remote_or_the_shards_in_order() -> None:
    from tandem_services.client import ChannelOptions, RemoteRetriever
    from tandem_services.shards import remote_generative

    one = remote_generative("127.0.0.1:1", ChannelOptions(), 0.1)
    assert isinstance(one, RemoteRetriever) and one.name == "generative"
    many = remote_generative("127.0.0.1:1, 127.0.0.1:2", ChannelOptions(), 0.1)
    assert isinstance(many, ShardedRetriever) and many.name == "generative"
    assert [s.target for s in many.shards] == ["127.0.0.1:1", "127.0.0.1:2"]  # type: ignore[attr-defined]
    many.close()
    with pytest.raises(InvalidInput, match="generative"):
        remote_generative("127.0.0.1:1,,127.0.0.1:2", ChannelOptions(), 0.1)


@pytest.mark.parametrize(("model", "spec", "extra", "message"), [
    (None, "0/2", {}, "needs `model`"),
    ("m", "0/2", {"registry": "file:///r"}, "cannot be sharded"),
    ("m", "2/2", {}, "0 <= i < N"),
    ("m", "two", {}, "i/N"),
])
def test_shard_loading_refuses_what_it_cannot_serve(model: str | None, spec: str, extra: dict, message: str) -> None:
    from tandem_services.shards import load_shard

    with pytest.raises(InvalidInput, match=message):
        load_shard(model, spec, **extra)


def test_gateway_flag_takes_comma_separated_shards_and_checks_each() -> None:
    import typer

    from tandem_app.cli.serve import _target

    assert _target("a:1,b:2", "--generative", True) == "a:1,b:2"
    with pytest.raises(typer.BadParameter):
        _target("a:1,b", "--generative", True)
    assert _target("a:1", "--sparse") == "a:1" and _target(None, "--generative", True) is None
