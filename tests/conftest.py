"""Shared fixtures: real PostgreSQL and Redis (see tests/support/services.py), settings."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from gateway.config.settings import Settings
from gateway.ops.runtime import migrate_database
from tests.support import services

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A PostgreSQL server: the configured one when it answers, else an embedded one."""
    url = os.environ.get("GATEWAY_TEST_DATABASE_URL", "")
    if url and services.pg_reachable(url):
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="keygate-pg-"))
    server_url, server = services.embedded_postgres(folder / "pg")
    yield server_url
    server.cleanup()  # type: ignore[attr-defined]
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test session, dropped at the end."""
    import asyncio

    url = services.create_database(pg_server_url)
    asyncio.run(migrate_database(url))
    yield url
    services.drop_database(pg_server_url, url)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis server: the configured one when it answers, else an embedded one."""
    url = os.environ.get("GATEWAY_TEST_REDIS_URL", "")
    if url and services.redis_reachable(url):
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="keygate-redis-"))
    server = services.embedded_redis(folder)
    yield server.url
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own: tests sharing a Redis never see each other's keys."""
    return f"kgtest:{secrets.token_hex(6)}:"


@pytest.fixture
def settings(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> Settings:
    """Settings for a test: real stores, fresh secrets, short durations."""
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        secret_key=secrets.token_urlsafe(32),
        key_pepper=secrets.token_urlsafe(32),
        routes_path=ROOT / "tests" / "fixtures" / "routes.yaml",
        data_dir=tmp_path / "data",
        key_cache_ttl=30.0,
        negative_cache_ttl=1.0,
        store_timeout=1.0,
        last_used_flush_interval=0.2,
        auth_fail_limit=10_000,  # tests send many bad keys from one address
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def private_redis() -> Iterator[services.PrivateRedis]:
    """A Redis of the test's own, which it may stop and restart."""
    server = services.PrivateRedis()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.folder, ignore_errors=True)
