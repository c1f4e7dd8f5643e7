"""Needs: PostgreSQL and Redis (tests/conftest.py); one test starts a Redis of its own and
stops it. A second gateway runs as a real `gateway serve` process.

Deleting a key closes its live streams, on every gateway, within the revocation bound: an
INVALID_APIKEY error, then close 1008. Measured over many deletions, with Redis up (100 ms)
and with Redis down (2 s, PostgreSQL's NOTIFY carries it). A key's expiry closes its streams
on time too, and an expired key opens none.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest

from gateway.config.settings import Settings
from gateway.keys.accounts import create_user
from gateway.keys.lifecycle import activate_key, create_key, delete_key
from gateway.store.redis import RedisKeyCache, connect_redis
from tests.support.processes import GatewayProcess
from tests.support.servers import RunningApp, bearer, issue_key, start_gateway
from tests.support.services import PrivateRedis
from tests.support.streams import (
    closed_with,
    expect_error,
    next_message,
    start_stream_sandbox,
    stream_settings,
    stream_url,
)

pytestmark = pytest.mark.integration

DELETIONS = 50


@pytest.fixture
async def stream_sandbox() -> AsyncIterator[RunningApp]:
    running = await start_stream_sandbox()
    yield running
    await running.stop()


async def closed_at(ws: aiohttp.ClientWebSocketResponse) -> float:
    """When the session was told its key is gone and closed (perf_counter)."""
    await expect_error(ws, "INVALID_APIKEY", timeout=5)
    assert await closed_with(ws, timeout=5) == 1008
    return time.perf_counter()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@dataclass
class Timings:
    from_commit: list[float]
    from_start: list[float]

    def report(self, label: str) -> str:
        ms = [v * 1000 for v in self.from_commit]
        return (f"{label}: {len(ms)} streams closed after their key's deletion committed: "
                f"p50 {statistics.median(ms):.1f} ms, p99 {p99(ms):.1f} ms, max {max(ms):.1f} ms "
                f"(from the delete's start: p99 {p99(self.from_start) * 1000:.1f} ms)")


async def measure(live: Settings, urls: list[str], db: asyncpg.Pool,
                  cache: RedisKeyCache | None) -> Timings:
    """Open a stream per gateway for a fresh key, delete the key, time each close."""
    timings = Timings([], [])
    async with aiohttp.ClientSession() as http:
        for _ in range(DELETIONS):
            key = await issue_key(db, live, ["read"])
            streams = [await http.ws_connect(url, headers=bearer(key)) for url in urls]
            for ws in streams:
                await next_message(ws, "AUTHENTICATED")
                await ws.send_json({"type": "SUBSCRIBE",
                                    "channels": [{"name": "ACCOUNT_HISTORY"}]})
                await next_message(ws, "INACTIVE_ORDERS_SNAPSHOT")  # the last of three
            waits = [asyncio.create_task(closed_at(ws)) for ws in streams]
            started = time.perf_counter()
            async with db.acquire() as conn:
                await delete_key(conn, key.key_id, actor="test", cache=cache)
            committed = time.perf_counter()
            for when in await asyncio.gather(*waits):
                timings.from_commit.append(max(0.0, when - committed))
                timings.from_start.append(when - started)
            for ws in streams:
                await ws.close()
    return timings


async def test_deleting_a_key_closes_its_streams_on_every_gateway_within_100ms(
    settings: Settings, stream_sandbox: RunningApp, db: asyncpg.Pool, redis_url: str,
) -> None:
    live = stream_settings(settings, stream_sandbox)
    first = await start_gateway(live)
    second = GatewayProcess(live, extra_env={
        "GATEWAY_STREAM_UPSTREAM_URL": live.stream_upstream_url or ""})
    cache = RedisKeyCache.from_settings(connect_redis(redis_url, 1.0), live)
    try:
        timings = await measure(live, [stream_url(first), stream_url(second.url)], db, cache)
    finally:
        await cache.aclose()
        second.stop()
        await first.stop()
    print("\n" + timings.report("redis up, two gateways"))
    assert p99(timings.from_commit) < 0.1, timings.report("redis up")


async def test_with_redis_down_deleting_a_key_closes_its_streams_within_2s(
    settings: Settings, stream_sandbox: RunningApp, db: asyncpg.Pool,
    private_redis: PrivateRedis,
) -> None:
    live = stream_settings(settings, stream_sandbox, redis_url=private_redis.url)
    first = await start_gateway(live)
    second = GatewayProcess(live, extra_env={
        "GATEWAY_STREAM_UPSTREAM_URL": live.stream_upstream_url or ""})
    try:
        private_redis.stop()  # no pub/sub, no tombstone: PostgreSQL's NOTIFY must carry it
        timings = await measure(live, [stream_url(first), stream_url(second.url)], db, None)
    finally:
        second.stop()
        await first.stop()
    print("\n" + timings.report("redis down, two gateways"))
    assert p99(timings.from_commit) < 2.0, timings.report("redis down")


async def _expiring_key(db: asyncpg.Pool, live: Settings, lifetime: float) -> tuple[str, float]:
    """A token for an active read key expiring `lifetime` seconds from now, and its expiry."""
    async with db.acquire() as conn:
        user_id = await create_user(conn, f"u{secrets.token_hex(6)}@example.com",
                                    "correct horse battery", verified=True)
        key_id = await create_key(conn, user_id=user_id, name="expiring", permissions=["read"],
                                  allowed_ips=(), actor="test", lifetime=lifetime)
        token = await activate_key(conn, key_id, pepper=live.key_pepper or "",
                                   hash_version=live.key_pepper_version, actor="test")
        expires = await conn.fetchval(
            "SELECT extract(epoch FROM expires_at) FROM api_keys WHERE key_id = $1", key_id)
    return token, float(expires)


async def test_an_expiring_key_closes_its_streams_when_it_expires(
    settings: Settings, stream_sandbox: RunningApp, db: asyncpg.Pool,
) -> None:
    live = stream_settings(settings, stream_sandbox)
    running = await start_gateway(live)
    token, expires = await _expiring_key(db, live, 1.0)
    try:
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(stream_url(running), headers=bearer(token)) as ws:
            await next_message(ws, "AUTHENTICATED")
            await ws.send_json({"type": "SUBSCRIBE", "channels": [{"name": "ACCOUNT_HISTORY"}]})
            await next_message(ws, "INACTIVE_ORDERS_SNAPSHOT")
            error = await expect_error(ws, "APIKEY_EXPIRED", timeout=3)
            late = time.time() - expires
            assert "expired" in error["message"]
            assert await closed_with(ws) == 1008
        print(f"\nexpiry: the stream closed {late * 1000:.1f} ms after the key expired")
        assert 0 <= late < 0.1
    finally:
        await running.stop()


async def test_an_expired_key_is_refused_with_1008(
    settings: Settings, stream_sandbox: RunningApp, db: asyncpg.Pool,
) -> None:
    live = stream_settings(settings, stream_sandbox)
    running = await start_gateway(live)
    token, expires = await _expiring_key(db, live, 0.2)
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.05)
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(stream_url(running)) as ws:
            await ws.send_json({"type": "AUTHENTICATE", "api_token": token})
            await expect_error(ws, "APIKEY_EXPIRED")
            assert await closed_with(ws) == 1008
    finally:
        await running.stop()
