"""``tandem serve``: run the gRPC services (one per role, or all in one process).

The services live in ``tandem_services``, which depends on this core package, so they are
imported inside the commands only (the core never imports them at module level).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tandem_app.cli.canary import (CanaryMode, CanaryPolicyFile, CanaryShare, CandidateAdapter,  # the canary's options
                               CandidateFusionModel, CandidateGenerative, CandidateModel, FeedbackFile, FeedbackKafka,
                               canary_parts)
from tandem_app.cli.learning import FailedKafka, FailedMin, PConsume, PModel, PRedis, PWeights, learn_parts, personal_spec
from tandem_app.cli.serve_options import (  # the options the commands share
    Host, TlsCert, TlsKey, TlsClientCa, TokenFile, MetricsPort, LogLevel, Tracing, MaxBatch, MaxWaitMs,
    RedisUrl, Index, Catalog, Factory, FactoryArg, Model, AdapterDir, RegistryUri, PollS, HealthPort,
    IntentModel, Fusion, FusionModel, DeadlineMs,
)

app = typer.Typer(help="Run Tandem's gRPC services: gateway, sparse, generative, intent, or --all-in-one.",
                  no_args_is_help=False, invoke_without_command=True)


def _options(host: str, port: int, tls_cert, tls_key, tls_client_ca, auth_token_file, tracing: bool,
             health_port: int = 0, *, admin_token_file: Path | None = None, reflection: bool = True) -> Any:
    from tandem_services.server import ServerOptions

    try:
        # A token file that turns out empty (e.g. a Secret with an empty key) must not start
        # the server open: asking for auth by file means auth is required.
        return ServerOptions(host=host, port=port, tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca,
                             auth_token_file=auth_token_file, admin_token_file=admin_token_file,
                             require_auth=auth_token_file is not None, tracing=tracing,
                             health_port=health_port or None, reflection=reflection)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _run(build, metrics_port: int, log_level: str) -> None:
    """Build the server inside its event loop, serve until SIGTERM/SIGINT, shut down gracefully."""
    import asyncio

    from tandem.errors import TandemError
    from tandem_services.logs import setup_logging

    setup_logging(log_level)
    # Requests hop between the event loop and worker threads; with CPython's default 5 ms GIL
    # switch interval each hop can queue for up to 5 ms when another thread is busy.
    import os
    import sys

    sys.setswitchinterval(float(os.environ.get("TANDEM_GIL_SWITCH_MS", "1")) / 1000)
    if metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(metrics_port)
        except OSError as exc:
            typer.echo(f"tandem serve: `--metrics-port` {metrics_port}: {exc.strerror or exc}", err=True)
            raise typer.Exit(2) from None

    async def main() -> None:
        server = build()
        port = await server.start()
        typer.echo(f"tandem: serving {', '.join(s.name for s in server.services)} on "
                   f"{server.options.host}:{port}"
                   + (f" (health on {server.health_port})" if server.health_port else ""), err=True)
        for dep in server.dependencies:
            state = "ok" if server.dependency_up.get(dep.name) else "UNREACHABLE, serving degraded"
            typer.echo(f"tandem: {dep.name}: {dep.describe} ({state}; health service {dep.health_name})", err=True)
        await server.serve_forever()

    try:
        asyncio.run(main())
    except TandemError as exc:
        typer.echo(f"tandem serve: {exc}", err=True)
        raise typer.Exit(2) from None


def _target(value: str | None, option: str, many: bool = False) -> str | None:
    """A downstream ``HOST:PORT`` (``many``: comma-separated ones) checked (a bare host would dial port 443)."""
    from tandem_app.cli._options import server_address
    from tandem.errors import InvalidInput

    try:
        values = value.split(",") if many and value else [value]
        return ",".join(server_address(v, option) for v in values if v is not None) if value is not None else None
    except InvalidInput as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _watch_cache(server: Any, cache: Any) -> Any:
    """Report the searcher's result cache through health (``tandem.dependency.cache``): an
    unreachable Redis then shows as a degraded dependency, with a warning in the log."""
    from tandem_services.server import Dependency

    if cache is not None:
        server.add_dependency(Dependency("cache", cache.ping, describe=cache.describe()))
    return server


def _intents(intent_model: Path | None) -> Any:
    if intent_model is None:
        return None
    from tandem.intent.decomposer import CatalogIntentDecomposer

    return CatalogIntentDecomposer.load(intent_model)


def _searcher(retrievers: list, catalog: Path | None, redis_url: str | None, deadline_ms: float,
              intents: Any = None, fusion: str = "auto", fusion_model: Path | None = None,
              model: Path | None = None, registry: str | None = None, live_catalog: Any = None,
              personal: Any = None) -> Any:
    """The searcher of a server, by :func:`tandem.search.build.build_searcher` (what ``tandem
    search`` and ``tandem eval --system hybrid`` use too). Its catalog: ``--catalog``, else
    ``live_catalog`` (the gateway's sparse ``Lookup``), else a local source's stored fields;
    fusion by the rule of :func:`tandem.fusion.factory.make_fuser` (``auto`` takes the fusion
    model promoted with the base of ``--registry`` or of a registry ``--model``). A bad
    choice is a usage error."""
    from tandem.cache import make_cache
    from tandem.errors import InvalidInput
    from tandem.search.build import SearcherSpec, build_searcher
    from tandem.search.request import SearchConfig

    spec = SearcherSpec(sources=retrievers, fusion=fusion, fusion_model=fusion_model, model=model, registry=registry,
                        intents=intents, catalog=live_catalog, catalog_file=catalog, cache=make_cache(redis_url),
                        config=SearchConfig(deadline_s=deadline_ms / 1000), personal=personal)
    try:
        return build_searcher(spec)
    except InvalidInput as exc:  # names the choice at fault (`fusion`, `fusion_model`, `catalog_file`)
        raise typer.BadParameter(str(exc)) from None


def _generative(model: Path | None, factory: str | None, factory_arg: list[str],
                adapter: Path | None = None, registry: str | None = None, poll_s: float = 30.0,
                shard: str | None = None) -> Any:
    from tandem_services.app import load_generative

    if poll_s <= 0:
        raise typer.BadParameter("must be > 0", param_hint="--poll-s")
    return load_generative(str(model) if model else None, factory, *factory_arg,
                           adapter=str(adapter) if adapter else None, registry=registry, poll_s=poll_s, shard=shard)


@app.callback()
def serve(
    ctx: typer.Context,
    all_in_one: Annotated[bool, typer.Option(
        "--all-in-one", help="Every service in one process (embedded default).")] = False,
    index: Index = None, catalog: Catalog = None, model: Model = None, adapter: AdapterDir = None,
    registry: RegistryUri = None, poll_s: PollS = 30.0,
    generative_factory: Factory = None, generative_arg: FactoryArg = [],  # noqa: B006 - typer reads it
    redis_url: RedisUrl = None, deadline_ms: DeadlineMs = 2000.0,
    host: Host = "127.0.0.1", port: Annotated[int, typer.Option(help="TCP port.")] = 50051,
    tls_cert: TlsCert = None, tls_key: TlsKey = None, tls_client_ca: TlsClientCa = None,
    auth_token_file: TokenFile = None, metrics_port: MetricsPort = 0, log_level: LogLevel = "INFO",
    tracing: Tracing = False, max_batch: MaxBatch = 32, max_wait_ms: MaxWaitMs = 5.0,
    health_port: HealthPort = 0, intent_model: IntentModel = None, fusion: Fusion = "auto",
    fusion_model: FusionModel = None, candidate_model: CandidateModel = None, candidate_adapter: CandidateAdapter = None,
    candidate_fusion_model: CandidateFusionModel = None, canary_share: CanaryShare = 0.0,
    canary_mode: CanaryMode = "interleave", canary_policy: CanaryPolicyFile = None,
    feedback_kafka: FeedbackKafka = False, feedback_file: FeedbackFile = None,
    profiles_model: PModel = None, profiles_redis_url: PRedis = None, profiles_weights: PWeights = None,  # issue 22
    profiles_consume: PConsume = False, failed_queries_kafka: FailedKafka = False, failed_min_score: FailedMin = None,
) -> None:
    """Run the services. With --all-in-one: gateway, retrievers, intent and admin in one process."""
    if ctx.invoked_subcommand is not None:
        return
    if not all_in_one:
        given = [f"--{p.name.replace('_', '-')}" for p in ctx.command.params
                 if getattr(ctx.get_parameter_source(p.name), "name", "") == "COMMANDLINE"]
        # Bare `tandem serve`: the help is the answer; with options, the mistake is.
        typer.echo(f"{ctx.get_usage()}\nTry '{ctx.command_path} --help' for help.\n" if given else ctx.get_help(),
                   err=True)
        typer.echo("Error: name a service (gateway, sparse, generative, intent) or pass --all-in-one"
                   + (f"; {', '.join(given)} given without either" if given else ""), err=True)
        raise typer.Exit(2)
    if index is None:
        from tandem_app.cli._options import default_index

        index = default_index()
        if not index.is_dir():
            raise typer.BadParameter(f"--all-in-one needs a BM25 index and there is none at {index} (the default): "
                                     "build it with `tandem index build CATALOG`, or give --index DIR",
                                     param_hint="--index")
    opts = _options(host, port, tls_cert, tls_key, tls_client_ca, auth_token_file, tracing, health_port)

    def build():
        from tandem_services.app import BatchOptions, all_in_one_server, load_sparse

        retrievers = [load_sparse(str(index))]
        if model or generative_factory or registry:
            retrievers.append(_generative(model, generative_factory, generative_arg, adapter, registry, poll_s))
        personal = personal_spec(profiles_model, profiles_redis_url, profiles_weights)
        searcher = _searcher(retrievers, catalog, redis_url, deadline_ms, _intents(intent_model), fusion,
                             fusion_model, model=model, registry=registry, personal=personal)

        def candidate() -> Any:  # the same sources but the candidate's generative model and fusion
            gen = _generative(candidate_model, None, [], candidate_adapter) if candidate_model else None
            return _searcher([retrievers[0], *([gen] if gen else retrievers[1:])], catalog, redis_url, deadline_ms,
                             searcher.intents, "auto" if candidate_fusion_model else fusion,
                             candidate_fusion_model or fusion_model, model=model, registry=registry, personal=personal)
        parts = canary_parts(candidate if candidate_model or candidate_fusion_model else None, share=canary_share,
                             mode=canary_mode, policy_file=canary_policy, feedback_kafka=feedback_kafka,
                             feedback_file=feedback_file)
        parts |= learn_parts(searcher, profiles_consume, failed_queries_kafka, failed_min_score, feedback_kafka)
        return _watch_cache(all_in_one_server(searcher, opts, batched=["generative"], **parts,
                                              batch=BatchOptions(max_batch=max_batch, max_wait_ms=max_wait_ms)),
                            searcher.cache)

    _run(build, metrics_port, log_level)


@app.command()
def gateway(
    sparse: Annotated[str, typer.Option(help="host:port of the sparse (BM25) RetrieverService.")],
    generative: Annotated[str | None, typer.Option(help="host:port of the generative RetrieverService; shards "
                                                      "of a sharded one comma-separated, shard 0 first.")] = None,
    intent: Annotated[str | None, typer.Option(
        help="host:port of the IntentService (default: whole query).")] = None,
    intent_model: IntentModel = None, fusion: Fusion = "auto", fusion_model: FusionModel = None,
    registry: Annotated[str | None, typer.Option(
        "--registry", help="With --generative: the registry that service serves (its --registry); --fusion auto "
                           "takes the fusion model promoted with its current base-model.")] = None,
    catalog: Catalog = None, redis_url: RedisUrl = None, deadline_ms: DeadlineMs = 2000.0,
    downstream_token: Annotated[str | None, typer.Option(envvar="TANDEM_DOWNSTREAM_TOKEN",
                                                            help="Bearer token for the retriever services.")] = None,
    downstream_ca: Annotated[Path | None, typer.Option(help="PEM CA of the retriever services (TLS).")] = None,
    host: Host = "127.0.0.1", port: Annotated[int, typer.Option(help="TCP port.")] = 50051,
    tls_cert: TlsCert = None, tls_key: TlsKey = None, tls_client_ca: TlsClientCa = None,
    auth_token_file: TokenFile = None, metrics_port: MetricsPort = 0, log_level: LogLevel = "INFO",
    tracing: Tracing = False, health_port: HealthPort = 0,
    admin_token_file: Annotated[Path | None, typer.Option(
        help="Admin bearer tokens, one per line: only they may call AdminService or ask for `debug`; "
             "--auth-token-file tokens then only search.")] = None,
    reflection: Annotated[bool, typer.Option(
        help="Serve gRPC server reflection (off on the public gateway: it lists the admin API).")] = False,
    candidate_generative: CandidateGenerative = None, candidate_fusion_model: CandidateFusionModel = None,
    canary_share: CanaryShare = 0.0, canary_mode: CanaryMode = "interleave", canary_policy: CanaryPolicyFile = None,
    feedback_kafka: FeedbackKafka = False, feedback_file: FeedbackFile = None,
    profiles_model: PModel = None, profiles_redis_url: PRedis = None, profiles_weights: PWeights = None,  # issue 22
    profiles_consume: PConsume = False, failed_queries_kafka: FailedKafka = False, failed_min_score: FailedMin = None,
) -> None:
    """The gateway: SearchService over remote retriever services (BM25-only fallback)."""
    if intent and intent_model:
        raise typer.BadParameter("give --intent (remote) or --intent-model (in-process), not both")
    sparse = str(_target(sparse, "--sparse"))  # required: never None
    generative, intent, candidate_generative = (_target(v, f"--{o}", o == "generative") for v, o in (
        (generative, "generative"), (intent, "intent"), (candidate_generative, "candidate-generative")))
    opts = _options(host, port, tls_cert, tls_key, tls_client_ca, auth_token_file, tracing, health_port,
                    admin_token_file=admin_token_file, reflection=reflection)

    def build():
        from tandem_services.app import gateway_server
        from tandem_services.client import ChannelOptions, RemoteIntents, RemoteRetriever
        from tandem_services.remote_catalog import RemoteCatalog

        ch = ChannelOptions(token=downstream_token, tls_ca=downstream_ca)
        retrievers: list[Any] = [RemoteRetriever(sparse, "bm25", options=ch, timeout_s=deadline_ms / 1000)]
        if generative:  # several addresses: the shards, behind one ShardedRetriever
            from tandem_services.shards import remote_generative
            retrievers.append(remote_generative(generative, ch, deadline_ms / 1000))
        intents = RemoteIntents(intent, options=ch) if intent else _intents(intent_model)
        # Titles, filter fields and which items still exist, from the served index (deleted and
        # quarantined items the generative model still knows are dropped: tandem.search.catalog.known_hits).
        live = RemoteCatalog(sparse, options=ch, timeout_s=min(0.5, deadline_ms / 1000))
        personal = personal_spec(profiles_model, profiles_redis_url, profiles_weights)
        searcher = _searcher(retrievers, catalog, redis_url, deadline_ms, intents, fusion, fusion_model,
                             registry=registry if generative else None, live_catalog=live, personal=personal)

        def candidate() -> Any:  # the same sources but the candidate's generative service and fusion
            gen = (RemoteRetriever(candidate_generative, "generative", options=ch, timeout_s=deadline_ms / 1000)
                   if candidate_generative else None)
            return _searcher([retrievers[0], *([gen] if gen else retrievers[1:])], catalog, redis_url, deadline_ms,
                             intents, "auto" if candidate_fusion_model else fusion,
                             candidate_fusion_model or fusion_model, live_catalog=live, personal=personal)
        parts = canary_parts(candidate if candidate_generative or candidate_fusion_model else None,
                             share=canary_share, mode=canary_mode, policy_file=canary_policy,
                             feedback_kafka=feedback_kafka, feedback_file=feedback_file)
        parts |= learn_parts(searcher, profiles_consume, failed_queries_kafka, failed_min_score, feedback_kafka)
        return _watch_cache(gateway_server(searcher, opts, **parts), searcher.cache)

    _run(build, metrics_port, log_level)


@app.command("sparse")
def sparse_cmd(
    index: Annotated[Path, typer.Option(help="Lucene index built by `tandem index`.")],
    wait_for_index: Annotated[bool, typer.Option(
        help="When --index does not exist yet (the ingest consumer writes it on its first events), serve "
             "UNAVAILABLE until it does instead of exiting.")] = False,
    snapshots: Annotated[str | None, typer.Option(
        help="Serve the index snapshots the ingest consumer publishes to this registry (URI, or 'default': "
             "TANDEM_ARTIFACTS_URI, else <home>/registry) instead of a live index: for readers on other nodes. "
             "--index is then the local folder they are unpacked into.")] = None,
    snapshot_poll_s: Annotated[float, typer.Option(
        min=0.05, help="With --snapshots: seconds between checks for a newer snapshot.")] = 2.0,
    host: Host = "127.0.0.1", port: Annotated[int, typer.Option(help="TCP port.")] = 50052,
    tls_cert: TlsCert = None, tls_key: TlsKey = None, tls_client_ca: TlsClientCa = None,
    auth_token_file: TokenFile = None, metrics_port: MetricsPort = 0, log_level: LogLevel = "INFO",
    tracing: Tracing = False, health_port: HealthPort = 0,
) -> None:
    """The BM25 RetrieverService over a Lucene index."""
    opts = _options(host, port, tls_cert, tls_key, tls_client_ca, auth_token_file, tracing, health_port)

    def build():
        from tandem_services.app import load_sparse, retriever_server

        if snapshots is not None:
            from tandem.sparse.snapshot_reader import SnapshotIndex

            return retriever_server([SnapshotIndex(snapshots, index, poll_s=snapshot_poll_s)], opts)
        return retriever_server([load_sparse(str(index), wait_for_index=wait_for_index)], opts)

    _run(build, metrics_port, log_level)


@app.command("generative")
def generative_cmd(
    model: Model = None, factory: Factory = None, factory_arg: FactoryArg = [],  # noqa: B006
    adapter: AdapterDir = None, registry: RegistryUri = None, poll_s: PollS = 30.0,
    max_batch: MaxBatch = 32, max_wait_ms: MaxWaitMs = 5.0, shard: Annotated[str | None, typer.Option(
        help="i/N: serve only shard i of N of --model (by top-level ID code; the gateway merges the shards).")] = None,
    host: Host = "127.0.0.1", port: Annotated[int, typer.Option(help="TCP port.")] = 50053,
    tls_cert: TlsCert = None, tls_key: TlsKey = None, tls_client_ca: TlsClientCa = None,
    auth_token_file: TokenFile = None, metrics_port: MetricsPort = 0, log_level: LogLevel = "INFO",
    tracing: Tracing = False, health_port: HealthPort = 0,
) -> None:
    """The generative RetrieverService (CUDA when present), micro-batching concurrent requests.

    With --registry it serves the current base-model + adapter and swaps in newly promoted
    ones without a restart or a failed request (AdminService/Versions shows what is served)."""
    opts = _options(host, port, tls_cert, tls_key, tls_client_ca, auth_token_file, tracing, health_port)

    def build():
        from tandem_services.app import BatchOptions, retriever_server

        retriever = _generative(model, factory, factory_arg, adapter, registry, poll_s, shard)
        retriever.name = "generative"
        return retriever_server([retriever], opts, batch=BatchOptions(max_batch=max_batch, max_wait_ms=max_wait_ms))

    _run(build, metrics_port, log_level)


@app.command()
def intent(
    factory: Annotated[str | None, typer.Option(help="module:callable returning an IntentDecomposer.")] = None,
    model: IntentModel = None,
    host: Host = "127.0.0.1", port: Annotated[int, typer.Option(help="TCP port.")] = 50054,
    tls_cert: TlsCert = None, tls_key: TlsKey = None, tls_client_ca: TlsClientCa = None,
    auth_token_file: TokenFile = None, metrics_port: MetricsPort = 0, log_level: LogLevel = "INFO",
    tracing: Tracing = False, health_port: HealthPort = 0,
) -> None:
    """The IntentService: the decomposer of --model (fitted by `tandem intent fit`), or of
    --factory, or the whole query as one intent."""
    if factory and model:
        raise typer.BadParameter("give --model or --factory, not both")
    opts = _options(host, port, tls_cert, tls_key, tls_client_ca, auth_token_file, tracing, health_port)

    def build():
        from tandem.intent.base import WholeQuery
        from tandem_services.app import intent_server, load_factory

        decomposer = load_factory(factory) if factory else _intents(model) or WholeQuery()
        return intent_server(decomposer, opts)

    _run(build, metrics_port, log_level)
