"""Read-through composition of the three layers: memory -> Redis -> PostgreSQL.

A hit fills the layers above it. Redis down: PostgreSQL answers. PostgreSQL down: a stale
in-process answer is served for a bounded time, otherwise `StoreUnavailable` (fail closed).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from gateway.http.errors import StoreUnavailable
from gateway.store.base import KeyRecord
from gateway.store.errors import POSTGRES_ERRORS
from gateway.store.memory import MISS, MemoryCache, Miss, Ticket
from gateway.store.postgres import PostgresKeyStore
from gateway.store.redis import RedisKeyCache, RedisUnavailable

__all__ = ["LayerStats", "LayeredKeyStore"]

log = logging.getLogger(__name__)


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
        # The in-process answer without awaiting, or `MISS`: the hot path's first try. The
        # memory's own method: no frame of ours around it.
        self.cached: Callable[[str], KeyRecord | Miss | None] = memory.get
        # Lookups in flight by key id: concurrent misses of one key share one lookup.
        self._inflight: dict[str, tuple[Ticket, asyncio.Future[KeyRecord | None]]] = {}

    async def get(self, key_id: str) -> KeyRecord | None:
        hit = self.memory.get(key_id)
        if hit is not MISS:
            return hit  # type: ignore[return-value]
        flight = self._inflight.get(key_id)
        # Join a lookup in flight only if the key was not invalidated since it started:
        # its answer may predate a deletion this request must see.
        if flight is not None and self.memory.is_current(flight[0]):
            return await asyncio.shield(flight[1])
        ticket = self.memory.ticket(key_id)
        future: asyncio.Future[KeyRecord | None] = asyncio.ensure_future(
            self._lookup(key_id, ticket))
        self._inflight[key_id] = (ticket, future)
        future.add_done_callback(functools.partial(self._landed, key_id))
        return await asyncio.shield(future)

    def _landed(self, key_id: str, future: asyncio.Future[KeyRecord | None]) -> None:
        flight = self._inflight.get(key_id)
        if flight is not None and flight[1] is future:
            del self._inflight[key_id]
        if not future.cancelled():
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits

    async def _lookup(self, key_id: str, ticket: Ticket) -> KeyRecord | None:
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
        except POSTGRES_ERRORS as exc:
            log.warning("key store unavailable for key %s: %r", key_id, exc)
            raise StoreUnavailable from exc
        self.stats.postgres_hits += 1
        if self.redis is not None:
            self.redis.fill(key_id, record)
        return record

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        await self.postgres.aclose()
