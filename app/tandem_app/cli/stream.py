"""``tandem stream publish|consume|snapshot|status``: the item-event stream and the catalog store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Publish and consume item events (Kafka, or a JSONL file); catalog snapshots.",
                  no_args_is_help=True)  # fmt: skip

StorePath = Annotated[
    Path | None, typer.Option("--store", help="Catalog store (default: <home>/catalog/catalog.sqlite).")
]
Bootstrap = Annotated[
    str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers (default: TANDEM_KAFKA_BOOTSTRAP).")
]


def _fail(e: Exception) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True).print(f"[red]error:[/red] {e}")
    return typer.Exit(2)


class StatusLine:
    """A background thread printing ``totals``' counts every ``every_s`` seconds, so a
    long-running consumer shows it is alive (and whether events arrive) between summaries."""

    def __init__(self, totals: Callable[[], Any], every_s: float, where: str, echo: Callable[[str], None],
                 lag: Callable[[], int | None] | None = None) -> None:
        import threading

        self._totals, self.every_s, self.where, self._echo, self._lag = totals, every_s, where, echo, lag
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consume-status", daemon=True)
        self._last_events = 0

    def line(self) -> str:
        """One status line: counts so far, the events since the previous line and the lag
        (``lag ?`` until the broker answered a lag check)."""
        t = self._totals()
        events = t.events + t.dead_lettered
        new, self._last_events = events - self._last_events, events
        line = (f"consume {self.where}: {events} events ({new} new in the last {self.every_s:g} s): "
                f"applied {t.applied}, duplicates {t.duplicates}, stale {t.stale}, refused {t.dead_lettered}, "
                f"quarantined {t.quarantined}")
        if self._lag is not None:
            lag = self._lag()
            line += f"; lag {'?' if lag is None else lag}"
        return line

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._echo(self.line())

    def __enter__(self) -> StatusLine:
        if self.every_s > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def _settings(bootstrap: str | None = None, topic: str | None = None):
    from tandem.streams.config import StreamSettings

    s = StreamSettings()
    update = {k: v for k, v in (("kafka_bootstrap", bootstrap), ("items_topic", topic)) if v}
    return s.model_copy(update=update) if update else s


@app.command()
def publish(
    file: Annotated[Path, typer.Argument(help="JSONL of item events ({op, item, version}) or of bare items.")],
    bootstrap: Bootstrap = None,
    topic: Annotated[str | None, typer.Option("--topic", help="Topic (default: TANDEM_ITEMS_TOPIC).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Publish nothing when any line is invalid.")] = False,
) -> None:
    """Validate FILE and publish its events (idempotent producer, acks=all), in file order."""
    from rich.console import Console

    from tandem.errors import TandemError
    from tandem.streams.producer import EventProducer, read_event_file

    console = Console()
    try:
        lines = list(read_event_file(file))
        bad = [ln for ln in lines if ln.error is not None]
        for ln in bad[:10]:
            console.print(f"[yellow]line {ln.lineno} skipped[/yellow] ({ln.error.reason}): {ln.error}")  # type: ignore[union-attr]
        if bad and strict:
            raise _fail(ValueError(f"{len(bad)} invalid lines in `FILE`; nothing published (--strict)"))
        events = [ln.event for ln in lines if ln.event is not None]
        with EventProducer(_settings(bootstrap, topic)) as producer:
            report = producer.publish(events)
    except TandemError as e:
        raise _fail(e) from None
    console.print(f"published {report.sent} events to {producer.topic}; {len(bad)} invalid lines skipped")


def _snapshots(live, uri: str | None, every_s: float, keep: int):
    """The index snapshot publisher for ``--publish-snapshots`` (a no-op context without it)."""
    import contextlib

    if uri is None or live is None:
        return contextlib.nullcontext()
    from tandem.sparse.snapshots import SnapshotPublisher

    return SnapshotPublisher(live.index_dir, uri, every_s=every_s, keep=keep)


@app.command()
def consume(
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="Apply this JSONL file instead of consuming Kafka, then exit.")
    ] = None,
    group: Annotated[str | None, typer.Option("--group", help="Consumer group (default: tandem-ingest).")] = None,
    bootstrap: Bootstrap = None,
    topic: Annotated[str | None, typer.Option("--topic", help="Topic (default: TANDEM_ITEMS_TOPIC).")] = None,
    dlq_topic: Annotated[str | None, typer.Option("--dlq-topic", help="Dead-letter topic.")] = None,
    store: StorePath = None,
    index: Annotated[Path | None, typer.Option("--index", help="Live BM25 index (default: <home>/indexes/bm25).")] = None,
    no_index: Annotated[bool, typer.Option("--no-index", help="Update the catalog store only.")] = False,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Events per applied batch.")] = 500,
    idle_exit: Annotated[
        float | None, typer.Option("--idle-exit", help="Exit after this many seconds without events, counted once partitions are assigned.")
    ] = None,
    health_port: Annotated[int | None, typer.Option("--health-port", help="Serve grpc.health.v1 here.")] = None,
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="Serve Prometheus /metrics here.")] = None,
    rejects: Annotated[Path | None, typer.Option("--rejects", help="With --from-file: write refused lines here.")] = None,
    status_every: Annotated[float, typer.Option(
        "--status-every", min=0, help="Print a status line (counts so far) every this many seconds; 0 = off.")] = 30.0,
    publish_snapshots: Annotated[str | None, typer.Option(
        "--publish-snapshots", help="Publish the index's new commits as snapshots to this registry (URI, or "
        "'default': TANDEM_ARTIFACTS_URI, else <home>/registry), for `tandem serve sparse --snapshots`.")] = None,
    snapshot_every: Annotated[float, typer.Option(
        "--snapshot-every", min=0.05, help="With --publish-snapshots: seconds between checks for a new commit.")] = 10.0,
    snapshot_keep: Annotated[int, typer.Option(
        "--snapshot-keep", min=1, help="With --publish-snapshots: snapshots kept; older ones are deleted.")] = 3,
) -> None:
    """Apply item events to the catalog store and the live BM25 index until SIGTERM/SIGINT.

    Offsets are committed only after a batch is applied; malformed events go to the dead-letter topic with the reason in their headers.
    """
    import logging

    from rich.console import Console

    from tandem.errors import TandemError
    from tandem.streams.apply import Applier, LazyBM25Index
    from tandem.streams.store import CatalogStore

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # soft_wrap: a log line stays one line when stderr is a file or a pipe (80 columns there).
    console = Console(stderr=True, soft_wrap=True)
    settings = _settings(bootstrap, topic)
    live = None if no_index else LazyBM25Index(index or settings.index_dir)
    if publish_snapshots is not None and live is None:
        raise typer.BadParameter("--publish-snapshots needs the index (drop --no-index)", param_hint="--publish-snapshots")
    health = None
    try:
        from tandem.streams import metrics

        if metrics_port is not None:
            metrics.start_metrics_server(metrics_port)
        if health_port is not None:
            health = metrics.HealthServer(health_port)
        with CatalogStore(store or settings.store_path) as cstore:
            applier = Applier(cstore, live)
            if from_file is not None:
                from tandem.streams.consumer import ingest_file

                if health:
                    health.set(True)
                totals = ingest_file(from_file, applier, batch_size=max_batch, rejects=rejects)
            else:
                from tandem.streams.consumer import IngestConsumer

                consumer = IngestConsumer(applier, settings, group=group, dlq_topic=dlq_topic, max_batch=max_batch)
                consumer.install_signal_handlers()
                if health:
                    health.set(True)
                where = f"{consumer.topic} @ {settings.kafka_bootstrap}"
                console.print(f"consuming {where} into {live.index_dir if live else 'the store only'}; "
                              "Ctrl-C stops after the current batch")
                with StatusLine(lambda: consumer.totals, status_every, where, console.print,
                                lag=lambda: consumer.lag_watch.lag), \
                        _snapshots(live, publish_snapshots, snapshot_every, snapshot_keep):
                    totals = consumer.run(max_idle_s=idle_exit)
            counts = cstore.counts()
    except TandemError as e:
        raise _fail(e) from None
    finally:
        if health:
            health.set(False)
            health.stop()
        if live is not None:
            live.close()
    console.print(
        f"events {totals.events + totals.dead_lettered}: applied {totals.applied}, duplicates {totals.duplicates}, "
        f"stale {totals.stale}, refused {totals.dead_lettered}{f' {totals.reasons}' if totals.reasons else ''}, "
        f"quarantined {totals.quarantined}; store: {counts['items']} items, {counts['tombstones']} tombstones, seq {counts['seq']}"
    )


@app.command()
def snapshot(
    out: Annotated[Path, typer.Argument(help="Folder to write items + manifest.json into.")],
    store: StorePath = None,
    format: Annotated[str, typer.Option("--format", help="jsonl or parquet.")] = "jsonl",
    publish: Annotated[bool, typer.Option("--publish", help="Also publish it to the registry (kind snapshot).")] = False,
    promote: Annotated[bool, typer.Option("--promote", help="With --publish: make it the current snapshot.")] = False,
    uri: Annotated[str | None, typer.Option("--uri", help="Registry URI for --publish.")] = None,
) -> None:
    """Write a versioned snapshot of the live catalog (what the pipelines read)."""
    from tandem.errors import TandemError
    from tandem.streams.store import CatalogStore

    try:
        with CatalogStore(store or _settings().store_path) as cstore:
            m = cstore.snapshot(out, fmt=format)  # type: ignore[arg-type]
        typer.echo(f"snapshot {m.snapshot_version} at {out}: {m.items} items, {m.tombstones} tombstones, "
                   f"{m.quarantined} quarantined left out, seq {m.seq}")
        if publish:
            from tandem.registry import Registry

            metrics = {"items": m.items, "tombstones": m.tombstones, "seq": m.seq, "snapshot_version": m.snapshot_version}
            version = Registry(uri).publish("snapshot", out, metrics=metrics, promote=promote)  # type: ignore[arg-type]
            typer.echo(f"registry snapshot:{version}{' (current)' if promote else ''}")
    except TandemError as e:
        raise _fail(e) from None


@app.command()
def status(store: StorePath = None) -> None:
    """Counts of the catalog store: items, tombstones, applied-log rows, store and index
    sequence, snapshots, and items held in the poisoning quarantine (by rule)."""
    import json
    from collections import Counter

    from tandem.streams.poisoning import QuarantineLog
    from tandem.streams.store import CatalogStore

    path = store or _settings().store_path
    if not path.exists():
        raise _fail(FileNotFoundError(f"`--store` {path} does not exist"))
    with CatalogStore(path) as cstore:
        counts: dict[str, Any] = {**cstore.counts(), "snapshots": len(cstore.snapshots())}
    quarantine = QuarantineLog(path)
    try:
        held = quarantine.entries()
    finally:
        quarantine.close()
    counts["quarantined"] = len(held)
    counts["quarantined_by_rule"] = dict(Counter(reason for _, reason in held.values()))
    typer.echo(json.dumps(counts, indent=2))


@app.command()
def feedback(
    from_file: Annotated[Path | None, typer.Option(
        "--from-file", help="Load this JSONL feedback file (the gateway's file sink) instead of Kafka, then exit.")] = None,
    store: Annotated[Path | None, typer.Option(
        "--store", help="Feedback store (default: <home>/feedback/feedback.sqlite).")] = None,
    bootstrap: Bootstrap = None,
    group: Annotated[str | None, typer.Option("--group", help="Consumer group (default: tandem-feedback).")] = None,
    idle_exit: Annotated[
        float | None, typer.Option("--idle-exit", help="Exit after this many seconds without events, counted once partitions are assigned.")] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Most events stored per transaction.")] = 500,
) -> None:
    """Replay feedback events (topic tandem.feedback) into the local store the pipelines and
    `tandem canary` read; each event is stored once, so replaying again is safe."""
    import json

    from tandem.errors import TandemError
    from tandem.feedback.store import FeedbackStore
    from tandem.feedback.stream import feedback_consumer, replay_file

    settings = _settings(bootstrap)
    try:
        with FeedbackStore(store or settings.feedback_store_path) as fstore:
            if from_file is not None:
                added, duplicates, refused = replay_file(from_file, fstore)
            else:
                consumer = feedback_consumer(fstore, settings, group=group, max_batch=max_batch)
                consumer.install_signal_handlers()
                totals = consumer.run(max_idle_s=idle_exit)
                added, duplicates, refused = totals.applied, totals.duplicates, totals.dead_lettered
            counts = fstore.counts()
    except TandemError as e:
        raise _fail(e) from None
    typer.echo(f"feedback: added {added}, duplicates {duplicates}, refused {refused}; store: {json.dumps(counts)}")
