"""A throwaway Redis server on loopback, and the ``PING`` check that says it answers.

``redis-server`` is the Debian package that ``scripts/redis.sh install`` adds. The server
runs without persistence, as Tandem treats Redis (a cache that may lose everything); the
process lifecycle is :class:`~tandem_testing.server_process.ServerProcess`'s.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tandem.errors import Unavailable
from tandem_testing.server_process import ServerProcess, free_port


def redis_server_binary() -> Path:
    """``redis-server`` on PATH; raises :class:`Unavailable` naming the fix when missing."""
    found = shutil.which("redis-server")
    if found is None:
        raise Unavailable("`redis-server` not found; run `make setup` or `bash scripts/redis.sh install`")
    return Path(found)


class RedisServer(ServerProcess):
    """A throwaway Redis on 127.0.0.1: no persistence, so a restart starts empty.

    That matches how Tandem uses Redis (a result cache that may lose everything); tests of
    the cache after a Redis restart rely on it.
    """

    name = "redis"

    def __init__(
        self,
        *,
        binary: Path | None = None,
        data_dir: Path | None = None,
        port: int | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self.binary = binary if binary is not None else redis_server_binary()
        super().__init__(data_dir=data_dir, startup_timeout_s=startup_timeout_s)
        self._fixed_ports = port is not None
        self.port = port if port is not None else free_port()

    @property
    def url(self) -> str:
        """``redis://`` URL for ``redis.Redis.from_url`` (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _new_ports(self) -> None:
        if self._fixed_ports:
            raise Unavailable(f"Redis port {self.port} is in use")
        self.port = free_port()

    def _command(self) -> list[str]:
        return [
            str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.data_dir),
            "--daemonize", "no", "--protected-mode", "yes",
        ]

    def _ready(self, remaining_s: float) -> bool:
        return redis_answers_ping(self.url, timeout_s=min(remaining_s, 2.0))


def redis_answers_ping(url: str, timeout_s: float = 2.0) -> bool:
    """Whether the Redis at ``url`` answers ``PING``."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
