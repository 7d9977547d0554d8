"""Micro-batching: concurrent requests to a model share one forward pass.

A generative retriever's cost is dominated by the per-step decoder work, which batches
almost for free on a GPU; serving each request alone wastes it. Requests wait at most
``max_wait_s`` for company, and a batch never exceeds ``max_batch`` queries.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from tandem.errors import InvalidInput
from tandem.retriever import Hit
from tandem_services.metrics import BATCH_SIZE


@dataclass
class _Pending:
    queries: Sequence[str]
    k: int
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Collects :meth:`submit` calls into batches for ``fn(queries, k)`` (a ``Retriever.retrieve``).

    One batch runs at a time (a model on one device gains nothing from overlapping calls);
    requests arriving meanwhile form the next batch. A batch holds requests of one ``k`` only
    (batches are grouped by depth): for a beam search ``k`` is the beam width, so one deep
    request must not widen the beam, and the cost, of every query batched with it. Requests of
    another ``k`` wait, in arrival order, for a batch of their own. A failing batch fails each
    of its requests with the same error.
    """

    def __init__(
        self,
        fn: Callable[[list[str], int], list[list[Hit]]],
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        executor: Executor | None = None,
        source: str = "retriever",
    ) -> None:
        if max_batch < 1:
            raise InvalidInput(f"`max_batch` must be >= 1, got {max_batch}")
        if not max_wait_s >= 0:
            raise InvalidInput(f"`max_wait_s` must be >= 0, got {max_wait_s}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.executor = executor
        self.source = source
        self.batch_sizes: list[int] = []
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Results for ``queries`` (already validated), computed in a shared batch."""
        queue: asyncio.Queue[_Pending] | None
        if self._worker is None or self._worker.done():
            self._queue = queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run(queue), name=f"batcher-{self.source}")
        else:
            queue = self._queue  # set with the worker, so never None while it runs
            assert queue is not None
        pending = _Pending(queries, k, asyncio.get_running_loop().create_future())
        await queue.put(pending)
        return await pending.future

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        held: deque[_Pending] = deque()  # arrived, not yet batched: another k, or no room left
        while True:
            first = held.popleft() if held else await queue.get()
            batch, size = [first], len(first.queries)
            later: deque[_Pending] = deque()
            until = time.monotonic() + self.max_wait_s
            while size < self.max_batch:
                if held:
                    nxt = held.popleft()
                else:
                    remaining = until - time.monotonic()
                    try:
                        nxt = queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(
                            queue.get(), remaining)
                    except (asyncio.QueueEmpty, TimeoutError):
                        break
                if nxt.k != first.k:  # another depth: a batch of its own
                    later.append(nxt)
                    continue
                if size + len(nxt.queries) > self.max_batch:  # would overflow: it opens the next batch
                    later.append(nxt)
                    break
                batch.append(nxt)
                size += len(nxt.queries)
            held = later + held
            batch = [p for p in batch if not p.future.cancelled()]  # callers that gave up
            if not batch:
                continue
            queries = [q for p in batch for q in p.queries]
            k = first.k
            self.batch_sizes.append(len(queries))
            BATCH_SIZE.labels(self.source).observe(len(queries))
            try:
                results = await loop.run_in_executor(self.executor, self.fn, queries, k)
            except Exception as exc:  # noqa: BLE001 - delivered to every waiting caller
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            start = 0
            for p in batch:
                part = results[start:start + len(p.queries)]
                start += len(p.queries)
                if not p.future.done():
                    p.future.set_result([hits[: p.k] for hits in part])

    async def close(self) -> None:
        """Stop the worker (waiting callers are cancelled)."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
