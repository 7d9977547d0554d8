"""Sharded generative serving, services side: one shard per generative service, fan-out at the gateway.

``tandem serve generative --shard i/N`` serves shard ``i`` of ``N`` of a v2 model folder
(:func:`load_shard`; see :mod:`tandem.generative.tree_shards`); the gateway given several
comma-separated ``--generative`` addresses, in shard order, searches them through one
:class:`~tandem.generative.sharding.ShardedRetriever` (:func:`remote_generative`), so its
searcher still sees one ``generative`` source. One address (or ``--shard 0/1``): unchanged.
"""

from __future__ import annotations

from tandem.errors import InvalidInput
from tandem.retriever import Retriever


def load_shard(model_dir: str | None, spec: str, *, adapter: str | None = None, registry: str | None = None,
               factory: str | None = None) -> Retriever:
    """The retriever of shard ``spec`` (``"i/N"``) of ``model_dir``, an adapter merged in when given."""
    from tandem.generative.sharding import parse_shard
    from tandem.generative.tree_shards import open_shard_retriever

    index, count = parse_shard(spec)
    if registry or factory:
        raise InvalidInput("`shard` needs `model` (a v2 folder): a registry or factory source cannot be sharded yet")
    if not model_dir:
        raise InvalidInput("`shard` needs `model`, the v2 model folder to take the shard from")
    return open_shard_retriever(model_dir, index, count, **({"adapter": adapter} if adapter else {}))


def remote_generative(targets: str, options: object, timeout_s: float) -> Retriever:
    """The gateway's generative source: one :class:`RemoteRetriever`, or a :class:`ShardedRetriever`
    over several (``targets`` comma-separated ``host:port``, shard 0 first)."""
    from tandem.generative.sharding import MAX_SHARDS, ShardedRetriever
    from tandem_services.client import RemoteRetriever

    addresses = [t.strip() for t in targets.split(",")]
    if not all(addresses) or len(addresses) > MAX_SHARDS:
        raise InvalidInput(f"`generative`: 1 to {MAX_SHARDS} comma-separated host:port addresses, got {targets!r}")
    remotes: list[Retriever] = [RemoteRetriever(a, "generative", options=options, timeout_s=timeout_s)  # type: ignore[arg-type]
                                for a in addresses]
    return remotes[0] if len(remotes) == 1 else ShardedRetriever(remotes, name="generative")
