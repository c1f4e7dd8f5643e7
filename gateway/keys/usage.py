"""`last used` of keys, written in batches off the hot path: one UPDATE per interval."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from gateway.store.errors import POSTGRES_ERRORS
from gateway.tasks import every, stop_task

__all__ = ["UsageRecorder"]

log = logging.getLogger(__name__)


class UsageRecorder:
    """Collects key ids as they are used and flushes them every `interval` seconds."""

    def __init__(self, pool: asyncpg.Pool, interval: float) -> None:
        self._pool = pool
        self._interval = interval
        self._pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def touch(self, key_id: str) -> None:
        self._pending.add(key_id)

    def start(self) -> None:
        self._task = every(self._interval, self.flush, "last-used-flush")

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, set()
        try:
            await self._pool.execute(
                "UPDATE api_keys SET last_used_at = now() WHERE key_id = ANY($1::text[])",
                list(batch),
            )
        except POSTGRES_ERRORS as exc:
            log.warning("could not record last use of %d key(s): %r", len(batch), exc)
            self._pending |= batch

    async def aclose(self) -> None:
        await stop_task(self._task)
        await self.flush()
