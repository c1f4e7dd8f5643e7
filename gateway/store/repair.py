"""Repairs Redis copies that may be stale, as `RedisTrust` asks, from PostgreSQL's truth.

A deleted key's copy becomes a tombstone, a changed key's copy is dropped (the next lookup
refills it). A pass covers the keys distrusted one by one and, after an outage, every key
changed since its start minus the record TTL (a copy can be that old); until a pass succeeds
the lookups read PostgreSQL, so a stale copy is never believed in between.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from gateway.store.errors import STORE_ERRORS
from gateway.store.redis import RedisKeyCache
from gateway.tasks import stop_task

__all__ = ["RedisRepair"]

log = logging.getLogger(__name__)

# Both halves by index: the key ids named, and every key deleted or changed since $2.
_CHANGED = """
SELECT key_id, status::text AS status FROM api_keys WHERE key_id = ANY($1::text[])
UNION
SELECT key_id, status::text FROM api_keys WHERE deleted_at >= to_timestamp($2)
UNION
SELECT key_id, status::text FROM api_keys WHERE changed_at >= to_timestamp($2)
"""


class RedisRepair:
    """One background task per process, woken whenever the cache's trust wants a repair."""

    def __init__(self, cache: RedisKeyCache, pool: asyncpg.Pool, lookback: float,
                 retry_interval: float = 0.5) -> None:
        self._cache = cache
        self._pool = pool
        self._lookback = lookback
        self._retry_interval = retry_interval
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.passes = 0  # successful repair passes

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redis-repair")

    async def _run(self) -> None:
        wanted = self._cache.trust.wanted
        while True:
            await wanted.wait()
            try:
                is_done = await self.repair_once()
            except Exception:  # a bug: logged; the trust lapses by itself meanwhile
                log.exception("repairing redis copies failed")
                is_done = False
            if not is_done:
                await asyncio.sleep(self._retry_interval)

    async def repair_once(self) -> bool:
        """One pass over what is wanted now; False when a store did not answer."""
        trust = self._cache.trust
        plan = trust.plan()
        if plan is None:
            return True
        since = plan.since - self._lookback if plan.since is not None else None
        try:
            rows = await self._pool.fetch(_CHANGED, list(plan.keys), since)
            deleted = [r["key_id"] for r in rows if r["status"] == "deleted"]
            changed = [r["key_id"] for r in rows if r["status"] != "deleted"]
            if deleted or changed:
                await self._cache.repair(deleted, changed)
        except STORE_ERRORS as exc:
            if not self._failing:  # once per streak: an outage retries every interval
                log.warning("repairing redis copies failed, retrying: %r", exc)
            self._failing = True
            return False
        trust.repaired(plan)
        self._failing = False
        self.passes += 1
        if plan.since is not None:
            log.info("redis copies repaired after an outage: %d tombstoned, %d dropped, "
                     "for changes since %s", len(deleted), len(changed),
                     time.strftime("%H:%M:%S", time.localtime(plan.since)))
        return True

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None
