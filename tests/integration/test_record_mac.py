"""Needs: PostgreSQL and Redis (tests/conftest.py).

Whoever can write to Redis must not be able to forge a key record: every record there carries
a MAC keyed from the pepper and bound to its key id, and a record that fails it is a miss
(PostgreSQL answers), never a hit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from gateway.config.settings import Settings
from gateway.store.layered import LayeredKeyStore
from gateway.store.memory import MemoryCache
from gateway.store.postgres import PostgresKeyStore
from gateway.store.redis import RedisKeyCache, connect_redis
from tests.integration.conftest import services_of
from tests.support.servers import IssuedKey, RunningApp, bearer, issue_key, start_gateway

pytestmark = pytest.mark.integration


@dataclass
class Stored:
    """Two warm keys of two accounts, and the values Redis holds for them."""

    key: IssuedKey
    other: IssuedKey
    value: bytes
    other_value: bytes


async def _stored(client: aioredis.Redis, cache_key: str) -> bytes:
    for _ in range(200):  # fills are sent, not awaited
        value = await client.get(cache_key)
        if value is not None:
            return bytes(value)
        await asyncio.sleep(0.01)
    raise AssertionError(f"nothing was cached under {cache_key}")


def _fresh_store(settings: Settings, db: asyncpg.Pool, client: aioredis.Redis
                 ) -> LayeredKeyStore:
    """A store with an empty memory layer: its first lookup asks Redis."""
    return LayeredKeyStore(MemoryCache(ttl=60, negative_ttl=5, stale_ttl=300),
                           RedisKeyCache.from_settings(client, settings), PostgresKeyStore(db))


@pytest.fixture
async def warm(settings: Settings, db: asyncpg.Pool, redis_url: str
               ) -> AsyncIterator[tuple[Stored, aioredis.Redis]]:
    client = connect_redis(redis_url, 1.0)
    key = await issue_key(db, settings, ["read"], ips=["192.0.2.7"])
    other = await issue_key(db, settings, ["read", "withdraw"])
    store = _fresh_store(settings, db, client)
    assert await store.get(key.key_id) is not None
    assert await store.get(other.key_id) is not None
    prefix = f"{settings.redis_prefix}key:"
    yield (Stored(key, other, await _stored(client, prefix + key.key_id),
                  await _stored(client, prefix + other.key_id)), client)
    await client.aclose()


def _swap(old: bytes, new: bytes) -> Callable[[Stored], bytes]:
    def forge(stored: Stored) -> bytes:
        assert old in stored.value, stored.value
        return stored.value.replace(old, new)
    return forge


FORGERIES: dict[str, Callable[[Stored], bytes]] = {
    # The MAC left as it was, the data changed.
    "another account": lambda s: s.value.replace(
        b'"a":%d' % s.key.user_id, b'"a":%d' % s.other.user_id),
    "an extra permission": _swap(b'"p":["read"]', b'"p":["read","withdraw"]'),
    "no IP allowlist": _swap(b'"i":["192.0.2.7/32"]', b'"i":[]'),
    # A record as an older gateway wrote it: no MAC at all.
    "no MAC": lambda s: (b'{"a":%d,"p":["read","withdraw"],"i":[],"h":"%s","v":1}'
                         % (s.other.user_id, b"00" * 32)),
    "a wrong MAC": lambda s: b"1." + b"0" * 64 + s.value[s.value.index(b".", 2):],
    "a truncated record": lambda s: s.value[: len(s.value) // 2],
    # A genuine record, MAC and all, of another key, copied under this key's id.
    "copied from another key": lambda s: s.other_value,
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_a_forged_redis_record_is_a_miss_and_postgres_answers(
    warm: tuple[Stored, aioredis.Redis], settings: Settings, db: asyncpg.Pool, forgery: str
) -> None:
    stored, client = warm
    forged = FORGERIES[forgery](stored)
    assert forged != stored.value
    await client.set(f"{settings.redis_prefix}key:{stored.key.key_id}", forged, ex=600)
    store = _fresh_store(settings, db, client)
    record = await store.get(stored.key.key_id)
    # PostgreSQL's answer, the truth: not one forged value made it through.
    assert record is not None
    assert record.key_id == stored.key.key_id
    assert record.account_id == stored.key.user_id
    assert record.permissions == frozenset({"read"})
    assert [str(n) for n in record.allowed_ips] == ["192.0.2.7/32"]
    assert store.stats.redis_hits == 0 and store.stats.postgres_hits == 1
    assert store.redis is not None and store.redis.rejected == 1
    # The genuine records still pass.
    assert await store.get(stored.other.key_id) is not None
    assert store.stats.redis_hits == 1


async def test_the_gateway_forwards_the_true_account_not_a_forged_one(
    settings: Settings, sandbox: RunningApp, db: asyncpg.Pool, redis_url: str
) -> None:
    live = settings.replace(upstream_url=sandbox.url)
    victim = await issue_key(db, live, ["read", "withdraw"])
    attacker = await issue_key(db, live, ["read"])
    client = connect_redis(redis_url, 1.0)
    try:
        store = _fresh_store(live, db, client)
        assert await store.get(attacker.key_id) is not None
        cache_key = f"{live.redis_prefix}key:{attacker.key_id}"
        genuine = await _stored(client, cache_key)
        # The attacker's own key, claiming the victim's account and withdraw.
        forged = genuine.replace(b'"a":%d' % attacker.user_id, b'"a":%d' % victim.user_id)
        forged = forged.replace(b'"p":["read"]', b'"p":["read","withdraw"]')
        running = await start_gateway(live)  # an empty memory layer: it asks Redis first
        try:
            trust = services_of(running).store.redis.trust  # type: ignore[union-attr]
            for _ in range(200):  # Redis is believed once the start-up repair has run
                if not trust.is_quarantined:
                    break
                await asyncio.sleep(0.01)
            assert not trust.is_quarantined
            # Written after that repair (which drops copies of keys changed just before).
            await client.set(cache_key, forged, ex=600)
            async with aiohttp.ClientSession() as http:
                async with http.get(running.url + "/public/v1/account/balances",
                                    headers=bearer(attacker)) as resp:
                    assert resp.status == 200
                async with http.get(sandbox.url + "/__sandbox/last-request") as resp:
                    seen = (await resp.json())["headers"]
                assert seen["x-gateway-account-id"] == str(attacker.user_id)
                assert seen["x-gateway-permissions"] == "read"
                async with http.get(running.url + "/public/v1/account/deposit/crypto/BTC",
                                    headers=bearer(attacker)) as resp:
                    assert resp.status == 403
                    assert (await resp.json())["error"] == "MISSING_PERMISSION"
            counters = services_of(running).counters()
            assert counters["redis.rejected"] >= 1
        finally:
            await running.stop()
    finally:
        await client.aclose()
