"""Running a :class:`TandemServer` on its own event-loop thread (tests, benchmarks, the CLI's
in-process use), so synchronous code can start, use and stop it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from tandem_services.server import TandemServer


class BackgroundServer:
    """``with BackgroundServer(lambda: gateway_server(...)) as srv: ... srv.port ...``.

    The server is built inside the loop thread (``grpc.aio`` objects belong to one loop).
    """

    def __init__(self, build: Callable[[], TandemServer]) -> None:
        self._build = build
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tandem-server", daemon=True)
        self.server: TandemServer | None = None
        self.port: int | None = None

    def _run(self, coro, timeout: float | None = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> int:
        """Build and start the server; returns its port."""
        self._thread.start()

        async def boot() -> int:
            self.server = self._build()
            return await self.server.start()

        self.port = self._run(boot())
        return self.port

    def _started(self) -> TandemServer:
        """The built server; an error naming the cause before :meth:`start` built it."""
        if self.server is None:
            raise RuntimeError("the server is not started: call start() first")
        return self.server

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>`` (or the configured host)."""
        return f"{self._started().options.host}:{self.port}"

    def stop_async(self):
        """Begin graceful shutdown without waiting; returns a ``concurrent.futures.Future``."""
        return asyncio.run_coroutine_threadsafe(self._started().stop(), self._loop)

    def stop(self) -> None:
        """Graceful shutdown, then stop the loop thread. Idempotent."""
        if self.server is not None and self._loop.is_running():
            self._run(self.server.stop(), timeout=None)
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
