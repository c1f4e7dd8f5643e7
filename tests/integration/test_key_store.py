"""Needs: PostgreSQL and Redis (tests/conftest.py); some tests start a Redis of their own.

The key store against the real engines: migrations, offline rejection, revocation across
processes with Redis up and down, the refill race, and the store-down behaviours.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import asyncpg
import pytest

from gateway.config.settings import Settings
from gateway.http.errors import StoreUnavailable
from gateway.keys.lifecycle import delete_key
from gateway.keys.tokens import generate_key_id, generate_token
from gateway.store.base import KeyRecord, encode_record, record_mac_key
from gateway.store.layered import LayeredKeyStore
from gateway.store.memory import MISS, MemoryCache
from gateway.store.migrate import apply_migrations
from gateway.store.postgres import PostgresKeyStore
from gateway.store.redis import NEGATIVE, RedisKeyCache, connect_redis
from gateway.store.resp import call, open_pipe
from tests.integration.conftest import services_of
from tests.support.processes import GatewayProcess
from tests.support.servers import RunningApp, RunningGateway, bearer, issue_key, start_gateway
from tests.support.services import PrivateRedis, free_port
from tests.support.tcpproxy import through_proxy

pytestmark = pytest.mark.integration

BALANCES = "/public/v1/account/balances"


async def status_of(http: aiohttp.ClientSession, url: str, token: str) -> int:
    async with http.get(url + BALANCES, headers=bearer(token)) as resp:
        await resp.read()
        return resp.status


async def wait_for_status(http: aiohttp.ClientSession, url: str, token: str, expected: int,
                          timeout: float) -> float:
    """Seconds until `url` answers `expected`; fails after `timeout`."""
    started = time.perf_counter()
    while True:
        if await status_of(http, url, token) == expected:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            pytest.fail(f"{url} did not answer {expected} within {timeout}s")
        await asyncio.sleep(0.005)


async def test_migrations_are_idempotent(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await apply_migrations(conn) == []  # the session fixture applied them
        assert await apply_migrations(conn) == []
        names = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")]
        assert names[0] == "0001_initial" and len(names) == len(set(names))
    finally:
        await conn.close()


async def test_junk_tokens_never_reach_a_store(gateway: RunningGateway) -> None:
    store = services_of(gateway).store
    junk = ["nope", "kg_" + "a" * 76, "Bearer-less", "kg_aaaaaaaaaaaaaaaa_" + "b" * 59]
    async with aiohttp.ClientSession() as http:
        for token in junk:
            async with http.get(gateway.url + BALANCES, headers=bearer(token)) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"] == "INVALID_APIKEY"
    # SECURITY: no cache was even consulted, so neither Redis nor PostgreSQL was queried.
    assert store.memory.hits == store.memory.misses == 0
    assert store.stats.redis_hits == store.stats.postgres_hits == 0


async def test_mistyped_token_is_refused_offline(gateway: RunningGateway, db: asyncpg.Pool,
                                                 gateway_settings: Settings) -> None:
    key = await issue_key(db, gateway_settings)
    typo = key.token[:30] + ("a" if key.token[30] != "a" else "b") + key.token[31:]
    store = services_of(gateway).store
    async with aiohttp.ClientSession() as http:
        assert await status_of(http, gateway.url, typo) == 401
    assert store.memory.misses == 0


async def test_a_keep_alive_connection_remembers_its_key_but_not_past_a_deletion(
    gateway: RunningGateway, gateway_settings: Settings, db: asyncpg.Pool, redis_url: str
) -> None:
    key, other = await issue_key(db, gateway_settings), await issue_key(db, gateway_settings)
    forged, _ = generate_token(other.key_id)  # the right id, a valid checksum, a wrong secret
    edge = gateway.listening.edge
    # One connection for everything below: what it remembers is what is tested.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
        assert await status_of(http, gateway.url, key.token) == 200
        (state,) = (conn.state for conn in edge.connections)
        assert state.key is not None and state.key.key_id == key.key_id
        assert await status_of(http, gateway.url, key.token) == 200  # from the memory
        # Another key on the same connection is checked in full, and so is a forged one.
        assert await status_of(http, gateway.url, other.token) == 200
        assert state.key is not None and state.key.key_id == other.key_id
        assert await status_of(http, gateway.url, forged) == 401
        assert await status_of(http, gateway.url, key.token) == 200
        cache = RedisKeyCache.from_settings(connect_redis(redis_url, 1.0), gateway_settings)
        async with db.acquire() as conn:
            await delete_key(conn, key.key_id, actor="test", cache=cache)
        await cache.aclose()
        await wait_for_status(http, gateway.url, key.token, 401, timeout=2.0)
        assert len(edge.connections) == 1, "the client opened a second connection"


async def test_deletion_reaches_a_second_process_within_100ms(
    gateway: RunningGateway, gateway_settings: Settings, db: asyncpg.Pool, redis_url: str
) -> None:
    key = await issue_key(db, gateway_settings)
    other = GatewayProcess(gateway_settings)
    try:
        async with aiohttp.ClientSession() as http:
            assert await status_of(http, other.url, key.token) == 200  # cached there now
            assert await status_of(http, gateway.url, key.token) == 200
            cache = RedisKeyCache.from_settings(connect_redis(redis_url, 1.0), gateway_settings)
            async with db.acquire() as conn:
                await delete_key(conn, key.key_id, actor="test", cache=cache)
            await cache.aclose()
            elapsed = await wait_for_status(http, other.url, key.token, 401, timeout=2.0)
            assert await status_of(http, gateway.url, key.token) == 401
    finally:
        other.stop()
    assert elapsed < 0.1, f"second process refused the key only after {elapsed * 1000:.0f} ms"


async def test_deletion_with_redis_down_reaches_every_process_within_2s(
    settings: Settings, sandbox: RunningApp, db: asyncpg.Pool, private_redis: PrivateRedis
) -> None:
    live = settings.replace(upstream_url=sandbox.url, redis_url=private_redis.url)
    key = await issue_key(db, live)
    first = await start_gateway(live)
    second = GatewayProcess(live)
    try:
        async with aiohttp.ClientSession() as http:
            for url in (first.url, second.url):
                assert await status_of(http, url, key.token) == 200
            private_redis.stop()
            async with db.acquire() as conn:  # no Redis to tombstone in: NOTIFY must carry it
                await delete_key(conn, key.key_id, actor="test", cache=None)
            for url in (first.url, second.url):
                await wait_for_status(http, url, key.token, 401, timeout=2.0)
    finally:
        second.stop()
        await first.stop()


async def test_lookups_fall_back_to_postgres_when_redis_stops(
    settings: Settings, sandbox: RunningApp, db: asyncpg.Pool, private_redis: PrivateRedis
) -> None:
    live = settings.replace(upstream_url=sandbox.url, redis_url=private_redis.url)
    first = await start_gateway(live)
    try:
        private_redis.stop()
        key = await issue_key(db, live)  # never seen before: memory and Redis both miss
        async with aiohttp.ClientSession() as http:
            assert await status_of(http, first.url, key.token) == 200
        assert services_of(first).store.stats.postgres_hits >= 1
    finally:
        await first.stop()


async def test_postgres_down_serves_cached_keys_and_refuses_others(
    settings: Settings, sandbox: RunningApp, db: asyncpg.Pool, private_redis: PrivateRedis,
    database_url: str,
) -> None:
    proxy, proxied_url = await through_proxy(database_url)
    # A short in-process TTL, so the cached key is served from the stale bound.
    live = settings.replace(upstream_url=sandbox.url, redis_url=private_redis.url,
                            database_url=proxied_url, key_cache_ttl=0.2, redis_key_ttl=1)
    cached, uncached = await issue_key(db, live), await issue_key(db, live)
    running = await start_gateway(live)
    try:
        async with aiohttp.ClientSession() as http:
            assert await status_of(http, running.url, cached.token) == 200
            await proxy.cut()
            private_redis.stop()  # nothing but the process's own memory is left
            await asyncio.sleep(0.3)  # past the fresh TTL: only the stale bound remains
            assert await status_of(http, running.url, cached.token) == 200
            async with http.get(running.url + BALANCES, headers=bearer(uncached.token)) as r:
                body = await r.json()
                assert r.status == 503 and body["error"] == "SERVICE_UNAVAILABLE"
    finally:
        await running.stop()
        await proxy.cut()


class _PausedPostgres(PostgresKeyStore):
    """PostgreSQL, with a lookup that can be held after it has read its answer."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.read_done = asyncio.Event()
        self.release = asyncio.Event()

    async def get(self, key_id: str) -> KeyRecord | None:
        record = await super().get(key_id)
        self.read_done.set()
        await self.release.wait()
        return record


async def test_refill_racing_a_delete_cannot_resurrect_the_key(
    gateway_settings: Settings, db: asyncpg.Pool, redis_url: str
) -> None:
    key = await issue_key(db, gateway_settings)
    cache = RedisKeyCache.from_settings(connect_redis(redis_url, 1.0), gateway_settings)
    memory = MemoryCache(ttl=60, negative_ttl=5, stale_ttl=300)
    paused = _PausedPostgres(db)
    store = LayeredKeyStore(memory, cache, paused)
    try:
        lookup = asyncio.create_task(store.get(key.key_id))
        await paused.read_done.wait()  # it has read "active" from PostgreSQL...
        async with db.acquire() as conn:  # ...and now the key is deleted
            await delete_key(conn, key.key_id, actor="test", cache=cache)
        memory.invalidate(key.key_id)  # what the invalidation channels deliver
        paused.release.set()
        assert await lookup is not None  # that lookup started before the delete
        # Neither the memory layer nor Redis kept the stale answer.
        assert memory.get(key.key_id) is MISS
        assert await store.get(key.key_id) is None
        assert await cache.client.get(cache.cache_key(key.key_id)) == b"x"
    finally:
        await cache.aclose()


async def test_a_cold_lookup_fills_redis_before_the_next_command_on_its_pipe(
    gateway_settings: Settings, db: asyncpg.Pool, redis_url: str
) -> None:
    key = await issue_key(db, gateway_settings)
    client = connect_redis(redis_url, 1.0)
    pipe = open_pipe(client)  # the gateway's own, as `Gateway.open` makes it
    mac_key = record_mac_key(gateway_settings.key_pepper or "")
    cache = RedisKeyCache(client, f"{gateway_settings.redis_prefix}fill:", 60, 5, 3600,
                          pipe=pipe, mac_keys=(mac_key,))
    store = LayeredKeyStore(MemoryCache(ttl=60, negative_ttl=5, stale_ttl=300), cache,
                            PostgresKeyStore(db))
    unknown = generate_key_id()
    try:
        record = await store.get(key.key_id)
        assert record is not None and await store.get(unknown) is None
        # The fills were sent before the lookups returned: what follows on the same pipe
        # (the next lookup of another process's request) is answered after them.
        stored = await call(pipe, "GET", cache.cache_key(key.key_id))
        assert stored == encode_record(record, mac_key)
        assert await call(pipe, "GET", cache.cache_key(unknown)) == NEGATIVE
    finally:
        await pipe.aclose()
        await cache.aclose()


async def test_a_fill_that_fails_marks_redis_down() -> None:
    client = connect_redis(f"redis://127.0.0.1:{free_port()}", 1.0)  # nothing listens
    pipe = open_pipe(client)
    cache = RedisKeyCache(client, "kgtest:", 60, 5, 3600, retry_after=30.0, pipe=pipe,
                          mac_keys=())
    try:
        cache.fill(generate_key_id(), None)
        assert cache.is_up  # not waited for
        for _ in range(100):
            if not cache.is_up:
                break
            await asyncio.sleep(0.01)
        assert not cache.is_up, "a failed fill left Redis marked up"
    finally:
        await pipe.aclose()
        await cache.aclose()


async def test_store_unavailable_is_raised_not_swallowed(db: asyncpg.Pool) -> None:
    pool = await asyncpg.create_pool("postgresql://postgres@127.0.0.1:1/none", min_size=0)
    store = LayeredKeyStore(MemoryCache(1, 1, 1), None, PostgresKeyStore(pool, timeout=0.5))
    try:
        with pytest.raises(StoreUnavailable):
            await store.get("aaaaaaaaaaaaaaaa")
    finally:
        await pool.close()


async def test_keys_deleted_while_redis_was_unreachable_are_retombstoned(
    settings: Settings, sandbox: RunningApp, db: asyncpg.Pool, private_redis: PrivateRedis
) -> None:
    """Redis unreachable (not restarted: its data survives) while a key is deleted: when it
    is reachable again, no gateway may find the key's old active record there."""
    from tests.support.tcpproxy import CuttableProxy

    proxy = CuttableProxy("127.0.0.1", private_redis.port)
    await proxy.start()
    live = settings.replace(upstream_url=sandbox.url,
                            redis_url=f"redis://127.0.0.1:{proxy.port}/0")
    key = await issue_key(db, live)
    first = await start_gateway(live)
    try:
        async with aiohttp.ClientSession() as http:
            assert await status_of(http, first.url, key.token) == 200  # now cached in Redis
            await proxy.cut()
            async with db.acquire() as conn:
                await delete_key(conn, key.key_id, actor="test", cache=None)
            await wait_for_status(http, first.url, key.token, 401, timeout=2.0)
            await proxy.restore()
            # The first gateway's channel comes back and re-tombstones the key.
            client = connect_redis(private_redis.url, 1.0)
            try:
                cache_key = f"{live.redis_prefix}key:{key.key_id}"
                for _ in range(100):
                    if await client.get(cache_key) == b"x":
                        break
                    await asyncio.sleep(0.05)
                assert await client.get(cache_key) == b"x"
            finally:
                await client.aclose()
            fresh = await start_gateway(live)  # an empty memory layer: asks Redis
            try:
                assert await status_of(http, fresh.url, key.token) == 401
            finally:
                await fresh.stop()
    finally:
        await first.stop()
        await proxy.cut()
