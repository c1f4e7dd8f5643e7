"""The services one gateway process holds, built from settings and torn down in reverse."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from gateway.config.route_file import ConfigError, load_route_table
from gateway.config.routes import RouteTable
from gateway.config.settings import Settings
from gateway.keys.usage import UsageRecorder
from gateway.observability.accesslog import AccessLog
from gateway.observability.metrics import Metrics
from gateway.observability.outcomes import Outcomes
from gateway.observability.readiness import check_readiness
from gateway.pipeline.abuse import AuthFailureGuard
from gateway.pipeline.limiter import RateLimiter
from gateway.pipeline.runner import Steps, steps_for
from gateway.store.invalidation import InvalidationListener
from gateway.store.layered import LayeredKeyStore
from gateway.store.memory import MemoryCache
from gateway.store.postgres import PostgresKeyStore, create_pool
from gateway.store.redis import RedisKeyCache, connect_redis
from gateway.store.repair import RedisRepair
from gateway.store.resp import open_pipe

__all__ = ["Gateway"]

log = logging.getLogger(__name__)


class Gateway:
    """Everything a request needs besides itself. Built by `Gateway.open()`."""

    table: RouteTable
    store: LayeredKeyStore
    limiter: RateLimiter | None
    guard: AuthFailureGuard
    usage: UsageRecorder
    access_log: AccessLog
    outcomes: Outcomes
    listener: InvalidationListener
    repair: RedisRepair
    pool: asyncpg.Pool
    redis: aioredis.Redis

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.steps: Steps = steps_for(rate_limits=settings.rate_limits)
        self.peppers: Mapping[int, str] = {
            **settings.old_key_peppers, settings.key_pepper_version: settings.key_pepper or ""}
        self._stack = AsyncExitStack()
        # Told of each invalidated key after the key cache forgot it, and of each reset (an
        # invalidation channel reconnected): live stream sessions check their key again.
        self.key_watchers: list[Callable[[str], None]] = []
        self.reset_watchers: list[Callable[[], None]] = []
        self._background: set[asyncio.Task[None]] = set()
        # The route file as last loaded, and as the watcher last saw it (`_file_version`).
        self._routes_version: tuple[int, int, int] | None = None
        self._routes_seen: tuple[int, int, int] | None = None

    @classmethod
    async def open(cls, settings: Settings) -> Gateway:
        gateway = cls(settings)
        try:
            await gateway._open()
        except BaseException:
            await gateway.aclose()
            raise
        return gateway

    async def _open(self) -> None:
        settings = self.settings
        assert settings.database_url and settings.redis_url, "resolve settings first"
        self.table = self._load_routes()
        # min_size=0: a gateway starts (and serves cached keys) while PostgreSQL is down.
        self.pool = await create_pool(settings.database_url, min_size=0, max_size=10,
                                      timeout=settings.store_timeout * 5)
        self._stack.push_async_callback(self.pool.close)
        self.redis = connect_redis(settings.redis_url, settings.store_timeout)
        self._stack.push_async_callback(self.redis.aclose)
        # The hot path's Redis calls (key lookups, rate limits, failed-auth counts) share one
        # lean connection.
        pipe = open_pipe(self.redis)
        self._stack.push_async_callback(pipe.aclose)
        redis_cache = RedisKeyCache.from_settings(self.redis, settings, pipe)
        memory = MemoryCache(settings.key_cache_ttl, settings.negative_cache_ttl,
                             settings.key_cache_stale_ttl, settings.key_cache_size)
        self.store = LayeredKeyStore(memory, redis_cache,
                                     PostgresKeyStore(self.pool, settings.store_timeout))
        # Copies in Redis of keys changed while this process was not running are repaired
        # before Redis is believed; so are those a NOTIFY names, and all after an outage.
        redis_cache.trust.quarantine(time.time())
        self.repair = RedisRepair(redis_cache, self.pool, settings.redis_key_ttl)
        self.repair.start()
        self._stack.push_async_callback(self.repair.aclose)
        self.limiter = (RateLimiter(pipe, settings.redis_prefix,
                                    lease_ttl=settings.rate_limit_lease_ttl)
                        if settings.rate_limits else None)
        self.guard = AuthFailureGuard(self.redis, settings.redis_prefix, settings.auth_fail_limit,
                                      settings.auth_fail_window, settings.ip_block_duration,
                                      pipe)
        await self.guard.load()
        self.usage = UsageRecorder(self.pool, settings.last_used_flush_interval,
                                   settings.usage_retention)
        self.usage.start()
        self._stack.push_async_callback(self.usage.aclose)
        self.access_log = AccessLog(settings, self.pool)
        self.access_log.start()
        self._stack.push_async_callback(self.access_log.aclose)  # before the pool closes
        # Last use and usage counts are read off the same batches: no call per request.
        self.outcomes = Outcomes([Metrics.get().count, self.access_log.write, self.usage.read])
        self.outcomes.start()
        self._stack.push_async_callback(self.outcomes.aclose)  # before the access log closes
        self.listener = InvalidationListener(
            settings.database_url, self.redis, redis_cache.channel,
            on_key=self._key_invalidated, on_reset=self._keys_reset,
            on_missed=redis_cache.trust.quarantine,
            other_channels={self.guard.channel: self.guard.on_block_message},
            on_database_key=redis_cache.trust.distrust,
        )
        self.listener.start()
        self._stack.push_async_callback(self.listener.aclose)
        await self._await_channels()

    def _key_invalidated(self, key_id: str) -> None:
        self.store.memory.invalidate(key_id)
        for watcher in list(self.key_watchers):
            watcher(key_id)

    def _keys_reset(self) -> None:
        self.store.memory.clear()
        for watcher in list(self.reset_watchers):
            watcher()

    async def _await_channels(self, timeout: float = 5.0) -> None:
        """Serve only once invalidations can reach us: a key cached before the channels are up
        could miss its deletion. A store that is down does not hold start-up forever."""
        waits = [self.listener.pg_connected.wait(), self.listener.redis_connected.wait()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            log.warning("starting without every invalidation channel (postgres: %s, redis: %s)",
                        self.listener.pg_connected.is_set(),
                        self.listener.redis_connected.is_set())

    def _load_routes(self) -> RouteTable:
        path = self.settings.routes_path
        # Taken before reading: a change made while we read still looks like a change after.
        # A refused file counts as loaded: it is not tried again until it changes.
        self._routes_version = _file_version(path)
        return load_route_table(path, self.settings.upstream_url,
                                stream_upstream_override=self.settings.stream_upstream_url)

    def reload_routes(self) -> bool:
        """Swap in the route file if it is valid; keep serving the old table if not."""
        try:
            self.table = self._load_routes()
        except ConfigError as exc:
            log.error("route file refused, the running config stays:\n%s", exc)
            return False
        log.info("routes reloaded: %d routes", len(self.table.routes))
        return True

    def reload_routes_if_changed(self) -> None:
        """Reload a changed route file once it has stayed the same for one more look: a
        file caught half-written must not become the table, even for a moment."""
        version = _file_version(self.settings.routes_path)
        if version != self._routes_version and version == self._routes_seen:
            self.reload_routes()
        self._routes_seen = version

    def counters(self) -> dict[str, int]:
        """The running totals of the key store and invalidations, as `Metrics.sync` takes them."""
        store = self.store
        stats = store.stats
        below_memory = (stats.redis_hits + stats.postgres_hits + stats.stale_served
                        + stats.unavailable)
        has_redis = store.redis is not None
        return {
            "memory.hit": store.memory.hits,
            # `misses` counts the hot path's try and the slow path's second look; a lookup
            # that went below memory ended in exactly one of the layers under it.
            "memory.miss": below_memory,
            "redis.hit": stats.redis_hits if has_redis else 0,
            "redis.miss": (below_memory - stats.redis_hits) if has_redis else 0,
            # Records that failed their MAC (forged, or from another pepper): read as misses.
            "redis.rejected": store.redis.rejected if store.redis is not None else 0,
            "postgres.answered": stats.postgres_hits,
            "postgres.stale": stats.stale_served,
            "postgres.unavailable": stats.unavailable,
            "invalidations": self.listener.received,
        }

    def sync_metrics(self) -> None:
        """Count the requests answered so far and bring the Prometheus counters up to date."""
        self.outcomes.drain()
        Metrics.get().sync(self.counters())

    async def readiness(self) -> dict[str, bool]:
        """One boolean per dependency (see `check_readiness`)."""
        return await check_readiness(self.pool, self.redis,
                                     sorted(set(self.table.upstreams.values())))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a fire-and-forget task, keeping a reference so it is not collected."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        await self._stack.aclose()


def _file_version(path: Path) -> tuple[int, int, int]:
    """What tells one version of a file from the next. Not the time alone: it is coarse (a
    truncation and the write after it can share one), and a file replaced by a rename keeps
    the time it was written."""
    try:
        stat = path.stat()
    except OSError:
        return (0, 0, 0)
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)
