"""``tandem doctor``: is this machine ready to run Tandem? One table, one exit code."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from importlib import metadata
from urllib.parse import urlparse

import typer

#: Distributions the core needs at run time (import name differs for some; metadata is enough).
REQUIRED_DISTRIBUTIONS = [
    "torch", "transformers", "peft", "tokenizers", "safetensors", "numpy", "scikit-learn",
    "pyserini", "ir-measures", "kfp", "kafka-python", "redis", "grpcio",
    "grpcio-health-checking", "grpcio-reflection", "protobuf", "pydantic",
    "pydantic-settings", "typer", "rich", "matplotlib", "fsspec", "pyarrow", "lightgbm",
]


@dataclass
class Check:
    """One line of the doctor's table."""

    name: str
    ok: bool
    detail: str
    required: bool = True
    fix: str = ""


def check_distributions() -> Check:
    missing = []
    for dist in REQUIRED_DISTRIBUTIONS:
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        return Check("python deps", False, "missing: " + ", ".join(missing), fix="make setup")
    return Check("python deps", True, f"{len(REQUIRED_DISTRIBUTIONS)} distributions present")


def check_java() -> Check:
    from tandem.errors import Unavailable
    from tandem.jvm import find_java_home

    try:
        jh = find_java_home()
    except Unavailable as exc:
        return Check("java (pyserini)", False, str(exc), fix="make setup, or set TANDEM_JAVA_HOME")
    return Check("java (pyserini)", True, f"{jh.path} — Java {jh.major} ({jh.origin})")


def _tcp_reachable(host: str, port: int, timeout: float) -> str | None:
    """``None`` when a TCP connection opens within ``timeout``; else the reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port} unreachable ({exc.strerror or exc})"


def _admin_config(client: type, hosts: list[str], timeout: float) -> dict[str, object]:
    """``KafkaAdminClient`` options bounding every wait by ``timeout``, in the names the
    installed kafka-python knows: 2.x calls the version probe's limit
    ``api_version_auto_timeout_ms``, 3.x ``bootstrap_timeout_ms``, and each refuses the other's."""
    ms = int(timeout * 1000)
    known = getattr(client, "DEFAULT_CONFIG", {})
    conf: dict[str, object] = {"bootstrap_servers": hosts, "request_timeout_ms": ms, "client_id": "tandem-doctor"}
    for name in ("api_version_auto_timeout_ms", "bootstrap_timeout_ms"):
        if name in known:
            conf[name] = ms
    return conf


def check_kafka(bootstrap: str | None, timeout: float) -> Check:
    if not bootstrap:
        return Check("kafka", True, "not configured (TANDEM_KAFKA_BOOTSTRAP): JSONL file source", required=False)
    hosts = [h.strip() for h in bootstrap.split(",") if h.strip()]
    errors = []
    for hp in hosts:
        host, _, port = hp.rpartition(":")
        if not host or not port.isdigit():
            return Check("kafka", False, f"`TANDEM_KAFKA_BOOTSTRAP` entry {hp!r} is not host:port", fix="fix the setting")
        err = _tcp_reachable(host, int(port), timeout)
        if err:
            errors.append(err)
    if len(errors) == len(hosts):
        return Check("kafka", False, "; ".join(errors), fix="start the broker (scripts/kafka.sh start) or fix TANDEM_KAFKA_BOOTSTRAP")
    try:
        from kafka import KafkaAdminClient

        started = time.monotonic()
        admin = KafkaAdminClient(**_admin_config(KafkaAdminClient, hosts, timeout))
        try:
            topics = admin.list_topics()
        finally:
            admin.close()
        took = (time.monotonic() - started) * 1000
    except Exception as exc:  # noqa: BLE001 - any client failure means "not usable", reported
        return Check("kafka", False, f"{bootstrap}: metadata request failed ({type(exc).__name__}: {exc})",
                     fix="check the broker's listeners")
    return Check("kafka", True, f"{bootstrap}: {len(topics)} topics, metadata in {took:.0f} ms")


def check_redis(url: str | None, timeout: float) -> Check:
    if not url:
        return Check("redis", True, "not configured (TANDEM_REDIS_URL): in-process LRU cache", required=False)
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        return Check("redis", False, f"`TANDEM_REDIS_URL` {url!r} is not redis://host:port/db", fix="fix the setting")
    err = _tcp_reachable(parsed.hostname, parsed.port or 6379, timeout)
    if err:
        return Check("redis", False, err, fix="start redis-server or fix TANDEM_REDIS_URL")
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        info = client.info("server")
    except redis.RedisError as exc:
        return Check("redis", False, f"{parsed.hostname}:{parsed.port}: {exc}", fix="check Redis auth/TLS settings")
    return Check("redis", True, f"{parsed.hostname}:{parsed.port or 6379}: Redis {info.get('redis_version')}")


def check_cuda() -> Check:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return Check("cuda", True, f"{torch.cuda.device_count()} device(s): {name}; torch {torch.__version__}", required=False)
    return Check("cuda", True, f"not available: generative model runs on CPU (torch {torch.__version__})", required=False)


def run_checks() -> list[Check]:
    """All checks, in table order."""
    from tandem.config import get_settings

    settings = get_settings()
    checks = [check_distributions(), check_java(),
              check_kafka(settings.kafka_bootstrap, settings.connect_timeout_s),
              check_redis(settings.redis_url, settings.connect_timeout_s)]
    try:
        checks.append(check_cuda())
    except ImportError:
        checks.append(Check("cuda", False, "torch is not installed", fix="make setup"))
    return checks


def doctor() -> None:
    """Check Python deps, the JVM for Pyserini, Kafka and Redis (when configured) and CUDA."""
    from rich.console import Console
    from rich.table import Table

    from tandem.config import Settings

    try:
        Settings()
    except Exception as exc:  # pydantic ValidationError: show it, not a traceback
        typer.echo(f"invalid TANDEM_* settings: {exc}", err=True)
        raise typer.Exit(2) from None
    checks = run_checks()
    table = Table(title="tandem doctor")
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    for c in checks:
        status = "ok" if c.ok else ("FAIL" if c.required else "warn")
        table.add_row(c.name, status, c.detail, c.fix)
    Console(width=120).print(table)
    failed = [c.name for c in checks if not c.ok and c.required]
    if failed:
        typer.echo("doctor: not ready — " + ", ".join(failed), err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach ``doctor`` as a top-level command."""
    app.command("doctor")(doctor)
