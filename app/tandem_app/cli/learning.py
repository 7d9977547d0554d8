"""Options of ``tandem serve gateway|--all-in-one`` for learning from users (issue 22), here so
serve.py only names them.

- ``--profiles-model`` (a v2 model folder: its item vectors and IDs) turns personalisation on:
  requests with a ``user_id`` whose profile exists are re-ranked by it, others rank as before.
  Profiles live in Redis (``--profiles-redis-url``) or in this process; ``--profiles-consume``
  keeps them current from ``tandem.feedback`` inside this process (needed with the in-process
  store; with Redis one consumer for all replicas is enough). ``--profiles-weights``: the
  re-ranking weights fitted on clicks (``bench.feedback --weights-out``), else the defaults.
- ``--failed-queries-kafka`` publishes failed searches (zero hits; best score under
  ``--failed-min-score``) to ``tandem.failed-queries`` from a bounded, never-blocking queue.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

PModel = Annotated[Path | None, typer.Option(
    help="v2 model folder whose item vectors build user profiles: personalises requests with a known user_id.")]
PRedis = Annotated[str | None, typer.Option(
    envvar="TANDEM_PROFILES_REDIS_URL", help="Redis of the user profiles (redis://host:port/db); unset = in-process.")]
PWeights = Annotated[Path | None, typer.Option(
    help="Personal re-ranking weights (tandem.personal.weights/1 JSON); default: built-in weights.")]
PConsume = Annotated[bool, typer.Option(
    help="Fold tandem.feedback into the profiles inside this process (TANDEM_KAFKA_* settings).")]
FailedKafka = Annotated[bool, typer.Option(
    help="Publish failed searches to tandem.failed-queries (TANDEM_KAFKA_* settings).")]
FailedMin = Annotated[float | None, typer.Option(
    help="A search whose best fused score is under this counts as failed (default: zero hits only).")]


def personal_spec(model: Path | None, redis_url: str | None, weights: Path | None) -> Any:
    """The :class:`~tandem.personal.serving.PersonalSpec` of the options (``None``: off), with
    its store and vectors opened once so the current and the candidate searcher share them."""
    if model is None:
        if redis_url or weights:
            raise typer.BadParameter("--profiles-redis-url/--profiles-weights need --profiles-model",
                                     param_hint="--profiles-model")
        return None
    from tandem.errors import TandemError
    from tandem.personal.serving import PersonalSpec, load_weights
    from tandem.personal.store import open_profile_store
    from tandem.personal.vectors import ItemVectors

    try:
        if weights is not None:
            load_weights(weights)  # a bad file is a usage error now, not at the first request
        return PersonalSpec(weights=weights, vectors=ItemVectors.from_tree_model(model),
                            store=open_profile_store(redis_url))
    except TandemError as exc:
        raise typer.BadParameter(str(exc), param_hint="--profiles-model/--profiles-redis-url") from None


def _supervised(make: Any, backoff_s: float = 5.0) -> None:
    """Run ``make().run()`` until it returns; a consumer that dies (Redis or Kafka away while a
    batch is applied: its offsets stay uncommitted, the batch comes again) is rebuilt after
    ``backoff_s``, so one outage does not stop the profiles for the life of the process."""
    import logging
    import time

    while True:
        try:
            make().run()
            return
        except Exception as exc:  # noqa: BLE001 - logged; the next consumer re-reads the uncommitted batch
            logging.getLogger(__name__).warning("profile consumer stopped (%s); restarting in %.0f s",
                                                str(exc)[:200], backoff_s)
            time.sleep(backoff_s)


def learn_parts(searcher: Any, consume: bool, failed_kafka: bool, min_score: float | None,
                feedback_kafka: bool = False) -> dict[str, Any]:
    """The ``observers`` keyword argument of the gateway servers (the failed-search emitter; with
    ``feedback_kafka`` the request-log emitter, whose records join the feedback to its queries),
    and the profile consumer started in a daemon thread when ``consume``."""
    from tandem_services.learning import FailedSearchEmitter, RequestLogEmitter

    if consume:
        if searcher.personal is None:
            raise typer.BadParameter("--profiles-consume needs --profiles-model", param_hint="--profiles-consume")
        from tandem.personal.consumer import PROFILE_GROUP, profile_consumer

        store = searcher.personal.store
        # Redis: the replicas share one group (each event folded once); in-process: each its own, all events.
        group = PROFILE_GROUP if store.backend == "redis" else f"{PROFILE_GROUP}-{socket.gethostname()}"
        threading.Thread(target=_supervised, args=(lambda: profile_consumer(store, searcher.personal.vectors,
                                                                            group=group),),
                         name="profiles", daemon=True).start()
    observers: list[Any] = []
    if failed_kafka:
        from tandem.failed.stream import FailedQueryPublisher

        observers.append(FailedSearchEmitter(FailedQueryPublisher(), min_score=min_score))
    elif min_score is not None:
        raise typer.BadParameter("--failed-min-score needs --failed-queries-kafka", param_hint="--failed-min-score")
    if feedback_kafka:
        from tandem.feedback.requests import RequestLogPublisher

        observers.append(RequestLogEmitter(RequestLogPublisher()))
    return {"observers": observers}
