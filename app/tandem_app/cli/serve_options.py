"""The options of ``tandem serve`` shared by its commands (typer ``Annotated`` aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Host = Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 in a container).")]
TlsCert = Annotated[Path | None, typer.Option(help="PEM server certificate chain (turns TLS on, with --tls-key).")]
TlsKey = Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")]
TlsClientCa = Annotated[Path | None, typer.Option(help="PEM CA for client certificates: mutual TLS.")]
TokenFile = Annotated[Path | None, typer.Option(
    help="Bearer tokens, one per line (TANDEM_AUTH_TOKENS adds comma-separated ones); set = auth on.")]
MetricsPort = Annotated[int, typer.Option(help="Port of the Prometheus /metrics endpoint (0 = off).")]
LogLevel = Annotated[str, typer.Option(help="Log level of the JSON logs on stderr.")]
Tracing = Annotated[bool, typer.Option(help="OpenTelemetry spans per RPC (needs opentelemetry-sdk).")]
MaxBatch = Annotated[int, typer.Option(help="Micro-batching: most queries per forward pass.")]
MaxWaitMs = Annotated[float, typer.Option(help="Micro-batching: longest wait for a batch to fill, ms.")]
RedisUrl = Annotated[str | None, typer.Option(
    envvar="TANDEM_REDIS_URL", help="Redis result cache (redis://host:port/db); unset = in-process LRU.")]
Index = Annotated[Path | None, typer.Option(
    help="Lucene index built by `tandem index build` (BM25 source; default: <home>/indexes/bm25).")]
Catalog = Annotated[Path | None, typer.Option(
    help="Items JSONL for titles and filters (default: the index's stored fields).")]
Factory = Annotated[str | None, typer.Option(
    help="module:callable returning a Retriever to serve as the generative source.")]
FactoryArg = Annotated[list[str], typer.Option(help="Argument for the factory (repeatable).")]
Model = Annotated[Path | None, typer.Option(help="Generative model directory (tandem.generative artifacts).")]
AdapterDir = Annotated[Path | None, typer.Option(
    "--adapter", help="Adapter folder (`tandem train adapter`) merged into --model.")]
RegistryUri = Annotated[str | None, typer.Option(
    "--registry", help="Serve the registry's current base-model + adapter and hot-reload them when promoted.")]
PollS = Annotated[float, typer.Option(
    "--poll-s", help="With --registry: seconds between checks of the current pointers.")]
HealthPort = Annotated[int, typer.Option(
    help="Plaintext port serving only grpc.health.v1, for kubelet probes when TLS is on (0 = off).")]
IntentModel = Annotated[Path | None, typer.Option(
    help="Intent decomposer fitted by `tandem intent fit` (in-process sub-intents; default: whole query).")]
Fusion = Annotated[str, typer.Option(help=(
    "Fusion of the sources' and sub-intents' lists: rrf, minmax, zscore, learned (needs --fusion-model) or "
    "auto = the best measured on Home Depot dev (bench.intent) for the given artifacts: learned with "
    "--fusion-model or with the fusion model the registry promoted with the served base (--registry, or a "
    "--model folder of the registry), minmax with --intent-model (RRF of sub-queries lowers nDCG@10), else rrf."))]
FusionModel = Annotated[Path | None, typer.Option(help="Learned fusion model (JSON) for --fusion learned.")]
DeadlineMs = Annotated[float, typer.Option(help="Search budget when the client sets no deadline, ms.")]

