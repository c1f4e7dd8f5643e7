"""Read-through composition of the three layers: memory -> Redis -> PostgreSQL.

A hit fills the layers above it. Redis down: PostgreSQL answers. PostgreSQL down: a stale
in-process answer is served for a bounded time, otherwise `StoreUnavailable` (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from gateway.errors import StoreUnavailable
from gateway.store.base import KeyRecord
from gateway.store.memory import MISS, MemoryCache
from gateway.store.postgres import PostgresKeyStore
from gateway.store.redis import RedisKeyCache, RedisUnavailable

__all__ = ["LayerStats", "LayeredKeyStore"]

log = logging.getLogger(__name__)

_PG_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


@dataclass(slots=True)
class LayerStats:
    """Lookups answered by each layer (memory hits are counted by the memory cache)."""

    redis_hits: int = 0
    postgres_hits: int = 0
    stale_served: int = 0
    unavailable: int = 0


class LayeredKeyStore:
    """The `KeyStore` the gateway uses."""

    def __init__(
        self, memory: MemoryCache, redis: RedisKeyCache | None, postgres: PostgresKeyStore
    ) -> None:
        self.memory = memory
        self.redis = redis
        self.postgres = postgres
        self.stats = LayerStats()

    def cached(self, key_id: str) -> KeyRecord | object | None:
        """The in-process answer without awaiting, or `MISS`. The hot path's first try."""
        return self.memory.get(key_id)

    async def get(self, key_id: str) -> KeyRecord | None:
        hit = self.memory.get(key_id)
        if hit is not MISS:
            return hit  # type: ignore[return-value]
        ticket = self.memory.ticket(key_id)
        try:
            record = await self._load(key_id)
        except StoreUnavailable:
            stale = self.memory.get_stale(key_id)
            if stale is MISS:
                self.stats.unavailable += 1
                raise
            # Not refilled: staleness stays bounded by the first expiry.
            self.stats.stale_served += 1
            return stale  # type: ignore[return-value]
        self.memory.fill(ticket, record)
        return record

    async def _load(self, key_id: str) -> KeyRecord | None:
        if self.redis is not None:
            try:
                found, record = await self.redis.get(key_id)
            except RedisUnavailable:
                pass
            else:
                if found:
                    self.stats.redis_hits += 1
                    return record
        try:
            record = await self.postgres.get(key_id)
        except _PG_ERRORS as exc:
            log.warning("key store unavailable for key %s: %r", key_id, exc)
            raise StoreUnavailable from exc
        self.stats.postgres_hits += 1
        if self.redis is not None:
            await self.redis.fill(key_id, record)
        return record

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        await self.postgres.aclose()
