"""Worker pools of the servers: a bounded backlog, and no work started after its deadline.

Servicers hand blocking work (searches, retrievals, reloads) to a thread pool. A plain
``ThreadPoolExecutor`` queues without bound, so under overload requests pile up behind the
workers until each is too late to be useful, and then still run. Two rules instead:

* :class:`BoundedExecutor` refuses work at once when ``max_queue`` calls already wait for a
  worker (:class:`Overloaded` → RESOURCE_EXHAUSTED: the client retries elsewhere now rather
  than timing out later). ``max_concurrent_rpcs`` bounds calls per server; this bounds the part
  of them that only waits.
* :func:`within_budget` wraps a call so that, when a worker finally picks it up, the time it
  waited is taken off its budget, and a call whose budget is spent is not run
  (:class:`DeadlinePassed` → DEADLINE_EXCEEDED). A client's own deadline already cancels queued
  work through gRPC; this also covers the gateway's default budget (clients without a deadline).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from tandem.errors import TandemError

T = TypeVar("T")

DEFAULT_QUEUE_PER_WORKER = 4
"""Backlog per worker thread before new work is refused (see :class:`BoundedExecutor`)."""


class Overloaded(TandemError):
    """Too many calls already wait for a worker; retry later or on another replica."""

    grpc_status = "RESOURCE_EXHAUSTED"


class DeadlinePassed(TandemError):
    """A call's budget was spent waiting for a worker, so it was not run."""

    grpc_status = "DEADLINE_EXCEEDED"


class BoundedExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` holding at most ``max_workers + max_queue`` calls (running or
    waiting); :meth:`submit` beyond that raises :class:`Overloaded` without queueing."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "", max_queue: int | None = None) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self.max_queue = DEFAULT_QUEUE_PER_WORKER * max_workers if max_queue is None else max_queue
        self._slots = threading.Semaphore(max_workers + self.max_queue)
        self._name = thread_name_prefix or "executor"

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue ``fn(*args, **kwargs)``, or :class:`Overloaded` when the backlog is full."""
        if not self._slots.acquire(blocking=False):
            raise Overloaded(f"{self._name}: {self.max_queue} calls already wait for a worker; "
                             "retry later or on another replica")
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())  # also when cancelled
        return future


MIN_LEFT_SHARE = 0.1
"""A call is not started with less than this share of its budget left (see :func:`within_budget`)."""
MIN_LEFT_S = 0.01
"""...nor with less than this many seconds left."""


def within_budget(fn: Callable[[float | None], T], budget_s: float | None, what: str = "call") -> Callable[[], T]:
    """``fn(remaining)`` to run in a pool: ``remaining`` is ``budget_s`` less the time spent
    waiting for a worker. A call left with less than a tenth of its budget (at least 10 ms)
    raises :class:`DeadlinePassed` instead: no source can answer in that time, so starting it
    would only add load (its retrievals would run on after it gave up)."""
    queued = time.monotonic()

    def run() -> T:
        if budget_s is None:
            return fn(None)
        waited = time.monotonic() - queued
        left = budget_s - waited
        if left < max(MIN_LEFT_S, MIN_LEFT_SHARE * budget_s):
            raise DeadlinePassed(f"{what} waited {waited * 1000:.0f} ms for a worker, too much of its "
                                 f"{budget_s * 1000:.0f} ms budget; it was not run")
        return fn(left)

    return run
