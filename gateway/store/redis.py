"""The Redis layer: a shared cache of key records, tombstones and the invalidation channel.

Values under `<prefix>key:<key_id>`:
* an encoded record (TTL `redis_key_ttl`), MAC'd with a key derived from the pepper and bound
  to the key id: whoever can write Redis cannot forge one, and one that fails is a miss,
* `-` for "no such active key" (TTL `negative_cache_ttl`),
* `x` for a deleted key (TTL `tombstone_ttl`): written with a plain SET by the deleter, while
  refills use SET NX, so a refill that read PostgreSQL before the delete cannot overwrite it.

What is read is believed only as far as `trust` (a `RedisTrust`) allows: not for a key that
changed until its copy is repaired, not at all after an outage until the repair pass.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis

from gateway.config.settings import Settings
from gateway.store.base import (
    KeyRecord,
    RecordRejected,
    decode_record,
    encode_record,
    record_mac_key,
)
from gateway.store.errors import REDIS_ERRORS
from gateway.store.resp import ClientPipe, Pipe, call
from gateway.store.trust import RedisTrust

__all__ = ["NEGATIVE", "TOMBSTONE", "RedisKeyCache", "RedisUnavailable", "connect_redis"]

log = logging.getLogger(__name__)

NEGATIVE = b"-"
TOMBSTONE = b"x"
_WARNED_MAX = 10_000  # key ids warned about; forgotten all at once past this
_LAPSE_MARGIN = 2.0  # seconds beyond the record TTL before a distrust lapses by itself


class RedisUnavailable(Exception):
    """Redis did not answer; callers fall through to PostgreSQL."""


def connect_redis(url: str, timeout: float) -> aioredis.Redis:
    """A client with short timeouts: a slow Redis must not stall requests."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        max_connections=200,
    )


class RedisKeyCache:
    """Read-through cache of key records in Redis, with a circuit breaker for outages."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        ttl: float,
        negative_ttl: float,
        tombstone_ttl: float,
        retry_after: float = 1.0,
        pipe: Pipe | None = None,
        *,
        mac_keys: tuple[bytes, ...],
    ) -> None:
        """`mac_keys`: the first MACs what is written, any of them is accepted on reading
        (older peppers' keys, while the pepper rotates). None: no record is cached."""
        self.client = client
        # Lookups and fills: over the caller's lean connection when it has one.
        self._pipe = pipe if pipe is not None else ClientPipe(client)
        self.prefix = prefix
        self._ttl = max(1, int(ttl))
        self._negative_ttl = max(1, int(negative_ttl))
        self._tombstone_ttl = max(1, int(tombstone_ttl))
        self._retry_after = retry_after
        self._down_until = 0.0
        self._fills: set[asyncio.Future[list[object]]] = set()
        self._mac_keys = mac_keys
        self.rejected = 0  # values that failed their MAC or did not parse: read as misses
        self._warned: set[str] = set()
        self.trust = RedisTrust(self._ttl + _LAPSE_MARGIN)

    @classmethod
    def from_settings(cls, client: aioredis.Redis, settings: Settings,
                      pipe: Pipe | None = None) -> RedisKeyCache:
        """The cache every gateway, deleter and test shares: prefix and TTLs from settings."""
        peppers = [settings.key_pepper, *settings.old_key_peppers.values()]
        return cls(client, settings.redis_prefix, settings.redis_key_ttl,
                   settings.negative_cache_ttl, settings.tombstone_ttl, pipe=pipe,
                   mac_keys=tuple(record_mac_key(p) for p in peppers if p))

    def cache_key(self, key_id: str) -> str:
        return f"{self.prefix}key:{key_id}"

    @property
    def channel(self) -> str:
        return f"{self.prefix}invalidate"

    @property
    def is_up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _mark_down(self, exc: BaseException) -> None:
        if self.is_up:
            log.warning("redis unavailable, falling back to PostgreSQL: %s", exc)
        self._down_until = time.monotonic() + self._retry_after
        # Deletions meanwhile may not reach Redis: it is not believed until repaired.
        self.trust.quarantine(time.time())

    async def get(self, key_id: str) -> tuple[bool, KeyRecord | None]:
        """(found, record): found=False means Redis knows nothing; raise RedisUnavailable
        when it is down or not to be believed for this key (`trust`)."""
        if not self.is_up or not self.trust.is_trusted(key_id):
            raise RedisUnavailable
        try:
            data = await call(self._pipe, "GET", self.cache_key(key_id))
        except REDIS_ERRORS as exc:
            self._mark_down(exc)
            raise RedisUnavailable from exc
        if data is None:
            return False, None
        if data in (NEGATIVE, TOMBSTONE):
            return True, None
        try:
            return True, decode_record(
                key_id, data if isinstance(data, bytes) else str(data).encode(), self._mac_keys)
        except RecordRejected as exc:
            self._reject(key_id, exc)
            return False, None

    def _reject(self, key_id: str, exc: RecordRejected) -> None:
        # SECURITY: never a hit; PostgreSQL answers. The forged value stays until it expires
        # (a NX fill does not replace it), so the memory layer absorbs the extra lookups.
        self.rejected += 1
        if key_id not in self._warned:
            if len(self._warned) >= _WARNED_MAX:
                self._warned.clear()
            self._warned.add(key_id)
            log.warning("redis record of key %s rejected (%s): reading PostgreSQL instead",
                        key_id, exc)

    def fill(self, key_id: str, record: KeyRecord | None) -> None:
        """Cache a PostgreSQL answer unless something (a tombstone) is already there.

        Sent, not waited for: the request already has its answer. On the gateway's own pipe
        (`RespPipe`), whatever is sent after it reaches Redis after it. A fill that fails
        marks Redis down, as a failed lookup does.
        """
        if (not self.is_up or (record is not None and not self._mac_keys)
                or not self.trust.is_trusted(key_id)):
            return  # a repair is due: it writes what this key's copy must be
        value, ttl = (
            (encode_record(record, self._mac_keys[0]), self._ttl) if record
            else (NEGATIVE, self._negative_ttl)
        )
        sent = asyncio.ensure_future(
            self._pipe.execute([("SET", self.cache_key(key_id), value, "EX", ttl, "NX")]))
        self._fills.add(sent)  # a task (reconnecting, or redis-py's pipe) must not be collected
        sent.add_done_callback(self._filled)

    def _filled(self, sent: asyncio.Future[list[object]]) -> None:
        self._fills.discard(sent)
        if sent.cancelled():
            return
        error = sent.exception()
        if error is None:  # an error reply (out of memory, say) is a failure too
            error = next((r for r in sent.result() if isinstance(r, Exception)), None)
        if error is not None:
            self._mark_down(error)

    async def invalidate(self, key_id: str, *, deleted: bool) -> None:
        """Tombstone (deleted) or forget (changed) a key, then tell every process."""
        async with self.client.pipeline(transaction=True) as pipe:
            if deleted:
                pipe.set(self.cache_key(key_id), TOMBSTONE, ex=self._tombstone_ttl)
            else:
                pipe.delete(self.cache_key(key_id))
            pipe.publish(self.channel, key_id)
            await pipe.execute()

    async def repair(self, deleted: list[str], changed: list[str]) -> None:
        """Tombstone `deleted` and forget `changed`, in one transaction, telling nobody: the
        repairing process heard of the changes, and so did every other one."""
        async with self.client.pipeline(transaction=True) as pipe:
            for key_id in deleted:
                pipe.set(self.cache_key(key_id), TOMBSTONE, ex=self._tombstone_ttl)
            for key_id in changed:
                pipe.delete(self.cache_key(key_id))
            await pipe.execute()

    async def aclose(self) -> None:
        await self.client.aclose()
