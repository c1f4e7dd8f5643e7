"""The scale run: many keys in PostgreSQL, lookups of random keys no cache has seen.

Keys are written with COPY (hashed with `gateway.keys.hash_secret`, the real token format),
then looked up through the gateway's own store classes, built as `Gateway.open` builds them:
* `postgres`: `PostgresKeyStore.get` alone, one lookup at a time;
* `cold`: `LayeredKeyStore.get` with an empty process cache and nothing in Redis, the path of
  a key's first request at a gateway: memory miss, Redis GET (miss), PostgreSQL, Redis SET NX;
* `cold, N concurrent`: the same with N lookups in flight on the gateway's pool size.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from bench.load import percentile
from gateway.config.settings import Settings
from gateway.keys.tokens import generate_key_id, generate_token, hash_secret
from gateway.store.base import record_mac_key
from gateway.store.layered import LayeredKeyStore
from gateway.store.memory import MemoryCache
from gateway.store.postgres import PostgresKeyStore, create_pool
from gateway.store.redis import RedisKeyCache, connect_redis
from gateway.store.resp import open_pipe

__all__ = ["LookupStats", "run_scale"]

_USERS = 1000
_BATCH = 50_000


@dataclass
class LookupStats:
    name: str
    lookups: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    found: int
    per_second: float  # with N in flight this is the figure; their latency is mostly queueing

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "lookups": self.lookups, "p50_ms": round(self.p50_ms, 3),
                "p99_ms": round(self.p99_ms, 3), "max_ms": round(self.max_ms, 3),
                "found": self.found, "per_second": round(self.per_second, 1)}


async def _populate(conn: asyncpg.Connection, keys: int, pepper: str, sample: int,
                    say: Callable[[str], None]) -> list[str]:
    """Insert `keys` active keys for `_USERS` users; return `sample` random key ids."""
    tag = secrets.token_hex(4)
    await conn.copy_records_to_table(
        "users", columns=["email", "password_hash", "email_verified"],
        records=[(f"scale-{tag}-{i}@example.com", "-", True) for i in range(_USERS)])
    user_ids = [r["id"] for r in await conn.fetch(
        "SELECT id FROM users WHERE email LIKE $1", f"scale-{tag}-%")]
    chosen = set(random.sample(range(keys), min(sample, keys)))
    picked: list[str] = []
    started = time.perf_counter()
    for offset in range(0, keys, _BATCH):
        records = []
        for i in range(offset, min(keys, offset + _BATCH)):
            key_id = generate_key_id()
            _, secret = generate_token(key_id)
            records.append((key_id, user_ids[i % len(user_ids)], "scale",
                            ["read"] if i % 3 else ["read", "trade"], "active",
                            hash_secret(secret, pepper), 1))
            if i in chosen:
                picked.append(key_id)
        await conn.copy_records_to_table(
            "api_keys", records=records,
            columns=["key_id", "user_id", "name", "permissions", "status", "secret_hash",
                     "hash_version"])
        done = min(keys, offset + _BATCH)
        if done % (_BATCH * 4) == 0 or done == keys:
            say(f"  {done:>9,} keys written ({time.perf_counter() - started:.0f} s)")
    await conn.execute("ANALYZE api_keys")
    random.shuffle(picked)
    return picked


async def _measure(name: str, ids: list[str], lookup: Callable[[str], Awaitable[object]],
                   concurrency: int = 1) -> LookupStats:
    latencies: list[float] = []
    found = 0
    queue = iter(ids)

    async def worker() -> None:
        nonlocal found
        for key_id in queue:
            started = time.perf_counter()
            record = await lookup(key_id)
            latencies.append((time.perf_counter() - started) * 1000)
            found += record is not None

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return LookupStats(name, len(latencies), percentile(latencies, 50),
                       percentile(latencies, 99), latencies[-1], found,
                       len(latencies) / elapsed)


async def _run(database_url: str, redis_url: str, keys: int, lookups: int, concurrency: int,
               say: Callable[[str], None]) -> dict[str, object]:
    pepper = secrets.token_urlsafe(32)
    conn = await asyncpg.connect(database_url)
    try:
        started = time.perf_counter()
        ids = await _populate(conn, keys, pepper, lookups * 3, say)
        populate_s = time.perf_counter() - started
        table_bytes = await conn.fetchval("SELECT pg_total_relation_size('api_keys')")
        total = await conn.fetchval("SELECT count(*) FROM api_keys WHERE name = 'scale'")
    finally:
        await conn.close()
    settings = Settings()  # the production defaults: pool size, timeouts, TTLs
    pool = await create_pool(database_url, max_size=10, timeout=settings.store_timeout * 5)
    client = connect_redis(redis_url, settings.store_timeout)
    pipe = open_pipe(client)  # the gateway's own lean connection for hot-path commands
    stats: list[LookupStats] = []
    try:
        postgres = PostgresKeyStore(pool, settings.store_timeout)

        def layered() -> LayeredKeyStore:
            # A fresh prefix: nothing of this run's keys is in Redis yet.
            redis_cache = RedisKeyCache(client, f"kgbench:{secrets.token_hex(6)}:",
                                        settings.redis_key_ttl, settings.negative_cache_ttl,
                                        settings.tombstone_ttl, pipe=pipe,
                                        mac_keys=(record_mac_key(secrets.token_hex(16)),))
            memory = MemoryCache(settings.key_cache_ttl, settings.negative_cache_ttl,
                                 settings.key_cache_stale_ttl, settings.key_cache_size)
            return LayeredKeyStore(memory, redis_cache, postgres)

        await _measure("warm-up", ids[:200], postgres.get)
        third = len(ids) // 3
        runs = (("postgres", ids[:third], postgres.get, 1),
                ("cold", ids[third:2 * third], layered().get, 1),
                (f"cold, {concurrency} concurrent", ids[2 * third:], layered().get, concurrency))
        for name, chosen, lookup, in_flight in runs:
            stats.append(await _measure(name, chosen, lookup, in_flight))
            say(f"  {name:<22} p50 {stats[-1].p50_ms:5.2f} ms  p99 {stats[-1].p99_ms:5.2f} ms  "
                f"{stats[-1].per_second:7.0f} lookups/s")
    finally:
        await pipe.aclose()
        await client.aclose()
        await pool.close()
    return {
        "keys": total, "populate_seconds": round(populate_s, 1),
        "table_bytes": table_bytes, "lookups": [s.as_dict() for s in stats],
    }


def run_scale(database_url: str, redis_url: str, *, keys: int, lookups: int,
              concurrency: int, say: Callable[[str], None]) -> dict[str, object]:
    """Populate, then measure; returns the JSON-ready result."""
    say(f"scale: {keys:,} keys in PostgreSQL, {lookups:,} cold lookups per kind")
    return asyncio.run(_run(database_url, redis_url, keys, lookups, concurrency, say))
