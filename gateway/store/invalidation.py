"""Invalidation: every gateway process evicts a key the moment it changes.

Two channels, so deletion reaches every process with Redis up or down:
* Redis pub/sub on `<prefix>invalidate` (published by the deleter after commit);
* PostgreSQL LISTEN on `keygate_keys`, notified by the deleting transaction itself.
A NOTIFY also goes to `on_database_key`: the deleter's Redis write may have failed, so the
key's Redis copy must not be believed until repaired. When a channel reconnects after a loss,
messages may have been missed: the memory cache is cleared, and `on_missed(lost_at)` says
since when (Redis copies of keys changed since then may be stale).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import asyncpg
import redis.asyncio as aioredis

from gateway.tasks import stop_task

__all__ = ["PG_CHANNEL", "InvalidationListener"]

log = logging.getLogger(__name__)

PG_CHANNEL = "keygate_keys"


class InvalidationListener:
    """Runs both subscriptions as background tasks; calls `on_key` / `on_reset`."""

    def __init__(
        self,
        database_url: str,
        redis_client: aioredis.Redis | None,
        redis_channel: str,
        on_key: Callable[[str], None],
        on_reset: Callable[[], None],
        on_missed: Callable[[float], None] | None = None,
        other_channels: dict[str, Callable[[str], None]] | None = None,
        on_database_key: Callable[[str], None] | None = None,
        retry_delay: float = 0.5,
    ) -> None:
        self._database_url = database_url
        self._redis = redis_client
        self._on_key = on_key
        self._on_reset = on_reset
        self._on_missed = on_missed
        self._on_database_key = on_database_key
        # Other cluster-wide announcements ride on the same subscription (e.g. IP blocks).
        self._handlers: dict[str, Callable[[str], None]] = {
            **(other_channels or {}), redis_channel: self._deliver}
        self._retry_delay = retry_delay
        self._tasks: list[asyncio.Task[None]] = []
        self.received = 0
        self._redis_last_ok: float | None = None  # when the subscription last answered
        self._redis_lost_at: float | None = None  # since when messages may have been missed
        self._pg_last_ok: float | None = None
        self._pg_lost_at: float | None = None
        self.pg_connected = asyncio.Event()
        self.redis_connected = asyncio.Event()

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._listen_postgres(), name="pg-invalidation"))
        if self._redis is not None:
            self._tasks.append(asyncio.create_task(self._listen_redis(), name="redis-invalidation"))

    def _deliver(self, key_id: str) -> None:
        self.received += 1
        self._on_key(key_id)

    async def _listen_postgres(self) -> None:
        def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            self._deliver(payload)
            if self._on_database_key is not None:
                self._on_database_key(payload)

        while True:
            conn: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._database_url, timeout=5)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(PG_CHANNEL, notified)
                self._on_reset()
                lost_at, self._pg_lost_at = self._pg_lost_at, None
                if lost_at is not None and self._on_missed is not None:
                    self._on_missed(lost_at)
                self.pg_connected.set()
                # asyncpg only notices a dead socket when it is used: probe it now and then.
                while not lost.is_set():
                    self._pg_last_ok = time.time()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=5)
                    if not lost.is_set():
                        await conn.execute("SELECT 1", timeout=5)
                raise ConnectionError("connection terminated")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: reconnect after a pause
                log.warning("postgres invalidation channel lost: %r", exc)
                self._pg_lost_at = self._pg_lost_at or self._pg_last_ok or time.time()
            finally:
                self.pg_connected.clear()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(self._retry_delay)

    async def _listen_redis(self) -> None:
        assert self._redis is not None
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self._handlers)
                # redis-py reconnects and resubscribes by itself after a short outage: we
                # must hear of that too, or the invalidations missed meanwhile go unnoticed.
                assert pubsub.connection is not None
                pubsub.connection.register_connect_callback(self._redis_reconnected)
                self._redis_back()
                self.redis_connected.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    self._redis_last_ok = time.time()
                    if message is not None and message["type"] == "message":
                        channel, data = message["channel"], message["data"]
                        handler = self._handlers.get(
                            channel.decode() if isinstance(channel, bytes) else str(channel))
                        if handler is not None:
                            handler(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: resubscribe after a pause
                log.warning("redis invalidation channel lost: %r", exc)
                self._redis_lost_at = self._redis_lost_at or self._redis_last_ok or time.time()
            finally:
                self.redis_connected.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
            await asyncio.sleep(self._retry_delay)

    async def _redis_reconnected(self, _connection: object) -> None:
        log.warning("redis invalidation channel reconnected")
        self._redis_lost_at = self._redis_lost_at or self._redis_last_ok or time.time()
        self._redis_back()

    def _redis_back(self) -> None:
        """(Re)subscribed: forget what may be stale, and repair Redis after an outage."""
        self._on_reset()
        lost_at, self._redis_lost_at = self._redis_lost_at, None
        if lost_at is not None and self._on_missed is not None:
            self._on_missed(lost_at)

    async def aclose(self) -> None:
        await asyncio.gather(*map(stop_task, self._tasks))  # all cancelled at once
        self._tasks.clear()
