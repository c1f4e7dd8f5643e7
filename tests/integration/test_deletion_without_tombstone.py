"""Needs: PostgreSQL and Redis (tests/conftest.py); starts Redis servers of its own, which it
stops and restarts (never the machine's shared one).

A deletion whose Redis tombstone could not be written: PostgreSQL's NOTIFY must carry it to
every gateway within 2 s, and the active copy left in Redis must never bring the key back,
neither while Redis is reachable nor after it comes back with its old data.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from gateway.config.settings import Settings
from gateway.keys.lifecycle import delete_key
from gateway.store.layered import LayeredKeyStore
from gateway.store.memory import MemoryCache
from gateway.store.postgres import PostgresKeyStore
from gateway.store.redis import RedisKeyCache, connect_redis
from gateway.store.repair import RedisRepair
from tests.support.processes import GatewayProcess
from tests.support.servers import RunningApp, bearer, issue_key, start_gateway
from tests.support.services import PrivateRedis, free_port

pytestmark = pytest.mark.integration

BALANCES = "/public/v1/account/balances"


async def status_of(http: aiohttp.ClientSession, url: str, token: str) -> int:
    async with http.get(url + BALANCES, headers=bearer(token)) as resp:
        await resp.read()
        return resp.status


async def refused_within(http: aiohttp.ClientSession, urls: list[str], token: str,
                         bound: float) -> None:
    started = time.monotonic()
    pending = set(urls)
    while pending:
        pending = {url for url in pending if await status_of(http, url, token) != 401}
        if pending and time.monotonic() - started > bound:
            pytest.fail(f"{sorted(pending)} still accepted the deleted key after {bound}s")
        await asyncio.sleep(0.01)


async def stays_refused(http: aiohttp.ClientSession, urls: list[str], token: str,
                        seconds: float) -> int:
    """Ask every gateway over and over for `seconds`; each answer must be 401."""
    asked = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for url in urls:
            status = await status_of(http, url, token)
            assert status == 401, f"{url} accepted the deleted key again ({status})"
            asked += 1
        await asyncio.sleep(0.005)
    return asked


def second_process(live: Settings, folder: Path) -> GatewayProcess:
    """`gateway serve` with these settings; it refuses many bad keys without blocking us."""
    config = folder / "gateway.yaml"
    config.write_text("auth_fail_limit: 100000\nnegative_cache_ttl: 1\n")
    return GatewayProcess(live, extra_env={"GATEWAY_CONFIG": str(config)})


async def _cached_in(redis_url: str, cache_key: str) -> bytes:
    client = connect_redis(redis_url, 1.0)
    try:
        for _ in range(200):
            value = await client.get(cache_key)
            if value is not None:
                return bytes(value)
            await asyncio.sleep(0.01)
    finally:
        await client.aclose()
    raise AssertionError(f"the key was never cached in Redis under {cache_key}")


async def test_a_deletion_the_deleter_could_not_tombstone_is_final_on_every_gateway(
    settings: Settings, sandbox: RunningApp, db: asyncpg.Pool, redis_url: str,
    tmp_path: Path,
) -> None:
    """The gateways reach Redis; the deleting process does not (a partition, a timeout)."""
    live = settings.replace(upstream_url=sandbox.url)
    key = await issue_key(db, live)
    first = await start_gateway(live)
    second = second_process(live, tmp_path)
    urls = [first.url, second.url]
    unreachable = RedisKeyCache.from_settings(
        connect_redis(f"redis://127.0.0.1:{free_port()}/0", 0.5), live)
    try:
        async with aiohttp.ClientSession() as http:
            for url in urls:
                assert await status_of(http, url, key.token) == 200
            cached = await _cached_in(redis_url, f"{live.redis_prefix}key:{key.key_id}")
            assert cached.startswith(b"1.")  # an active record, in reach of every gateway
            async with db.acquire() as conn:
                await delete_key(conn, key.key_id, actor="test", cache=unreachable)
            await refused_within(http, urls, key.token, 2.0)
            assert await stays_refused(http, urls, key.token, 3.0) > 20
            fresh = await start_gateway(live)  # nothing in its memory: it asks Redis
            try:
                assert await status_of(http, fresh.url, key.token) == 401
            finally:
                await fresh.stop()
    finally:
        await unreachable.aclose()
        second.stop()
        await first.stop()


async def test_a_deletion_while_redis_is_stopped_stays_final_when_it_returns_with_old_data(
    settings: Settings, sandbox: RunningApp, db: asyncpg.Pool, private_redis: PrivateRedis,
    tmp_path: Path,
) -> None:
    live = settings.replace(upstream_url=sandbox.url, redis_url=private_redis.url)
    key = await issue_key(db, live)
    cache_key = f"{live.redis_prefix}key:{key.key_id}"
    first = await start_gateway(live)
    second = second_process(live, tmp_path)
    urls = [first.url, second.url]
    deleter = RedisKeyCache.from_settings(connect_redis(private_redis.url, 0.5), live)
    try:
        async with aiohttp.ClientSession() as http:
            for url in urls:
                assert await status_of(http, url, key.token) == 200
            assert (await _cached_in(private_redis.url, cache_key)).startswith(b"1.")
            await deleter.client.save()  # what Redis holds now survives its restart
            private_redis.stop()
            async with db.acquire() as conn:  # the tombstone cannot be written
                await delete_key(conn, key.key_id, actor="test", cache=deleter)
            await refused_within(http, urls, key.token, 2.0)
            await stays_refused(http, urls, key.token, 1.5)  # past the negative cache TTL

            private_redis.start()  # the same folder: the active record is back in Redis
            client = connect_redis(private_redis.url, 1.0)
            try:
                assert await client.get(cache_key) is not None
                assert await stays_refused(http, urls, key.token, 4.0) > 20
                # The gateways repaired Redis for the deleter.
                assert await client.get(cache_key) == b"x"
            finally:
                await client.aclose()
            fresh = await start_gateway(live)
            try:
                assert await status_of(http, fresh.url, key.token) == 401
            finally:
                await fresh.stop()
    finally:
        await deleter.aclose()
        second.stop()
        await first.stop()


async def test_after_an_outage_redis_is_not_believed_until_repaired(
    settings: Settings, db: asyncpg.Pool, private_redis: PrivateRedis
) -> None:
    """The window between Redis answering again and the repair: the store reads PostgreSQL."""
    live = settings.replace(redis_url=private_redis.url)
    key = await issue_key(db, live)
    cache = RedisKeyCache.from_settings(connect_redis(private_redis.url, 0.5), live)
    memory = MemoryCache(ttl=60, negative_ttl=0.1, stale_ttl=300)
    store = LayeredKeyStore(memory, cache, PostgresKeyStore(db))
    try:
        assert await store.get(key.key_id) is not None
        await _cached_in(private_redis.url, cache.cache_key(key.key_id))
        await cache.client.save()
        private_redis.stop()
        async with db.acquire() as conn:
            await delete_key(conn, key.key_id, actor="test", cache=None)
        memory.invalidate(key.key_id)  # what the NOTIFY delivers
        assert await store.get(key.key_id) is None  # Redis down: PostgreSQL answers
        private_redis.start()  # with the active record still in it
        await asyncio.sleep(1.2)  # past the circuit breaker's pause and the negative TTL
        assert await cache.client.get(cache.cache_key(key.key_id)) is not None
        assert await store.get(key.key_id) is None
        assert store.stats.redis_hits == 0
        # The repair pass tombstones the key; Redis is believed again, and says "deleted".
        repair = RedisRepair(cache, db, live.redis_key_ttl)
        assert await repair.repair_once()
        assert await cache.client.get(cache.cache_key(key.key_id)) == b"x"
        memory.clear()
        assert await store.get(key.key_id) is None
        assert store.stats.redis_hits == 1
    finally:
        await cache.aclose()
