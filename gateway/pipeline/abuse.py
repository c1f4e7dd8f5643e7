"""Failed authentications per client IP; past a threshold the IP is blocked for a while.

Counting happens in Redis (shared by every gateway); the block list is held in each process
and spread by pub/sub, so checking it costs no round trip. With Redis down, counting is local.
"""

from __future__ import annotations

import logging
import time
from typing import cast

import redis.asyncio as aioredis

from gateway.store.errors import REDIS_ERRORS
from gateway.store.resp import ClientPipe, Pipe, Script

__all__ = ["AuthFailureGuard"]

log = logging.getLogger(__name__)

# KEYS[1]: failure counter, KEYS[2]: block marker; ARGV: window s, limit, block s.
# Returns the block's expiry (unix seconds) when this failure crossed the limit, else 0.
_RECORD = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if n >= tonumber(ARGV[2]) then
  local t = redis.call('TIME')
  local until_ = tonumber(t[1]) + tonumber(ARGV[3])
  redis.call('SET', KEYS[2], until_, 'EX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return until_
end
return 0
"""


class AuthFailureGuard:
    """Holds the blocked IPs of this process and records failures."""

    def __init__(self, client: aioredis.Redis | None, prefix: str, limit: int, window: float,
                 block_for: float, pipe: Pipe | None = None) -> None:
        self._client = client
        self._prefix = prefix
        self._limit = limit
        self._window = max(1, int(window))
        self._block_for = max(1, int(block_for))
        # Counting goes over the caller's lean connection when it has one: a flood of bad
        # keys must not cost a redis-py round trip each.
        self._pipe = pipe if pipe is not None or client is None else ClientPipe(client)
        self._script = Script(_RECORD)
        self._blocked: dict[str, float] = {}  # ip -> unix time the block ends
        self._local_failures: dict[str, list[float]] = {}

    @property
    def channel(self) -> str:
        return f"{self._prefix}blocks"

    @property
    def has_blocks(self) -> bool:
        return bool(self._blocked)

    def blocked_for(self, ip: str) -> float:
        """Seconds left on the block of `ip` (0 when not blocked)."""
        until = self._blocked.get(ip)
        if until is None:
            return 0.0
        left = until - time.time()
        if left <= 0:
            del self._blocked[ip]
            return 0.0
        return left

    def on_block_message(self, payload: str) -> None:
        """A block announced by any gateway: `<ip> <until>`."""
        ip, _, until = payload.partition(" ")
        try:
            self._blocked[ip] = float(until)
        except ValueError:
            log.warning("ignoring malformed block message %r", payload)

    async def load(self) -> None:
        """Blocks already in Redis (this process started after them)."""
        if self._client is None:
            return
        try:
            async for key in self._client.scan_iter(match=f"{self._prefix}block:*", count=500):
                value = await self._client.get(key)
                if value is not None:
                    ip = key.decode().removeprefix(f"{self._prefix}block:")
                    self._blocked[ip] = float(value)
        except REDIS_ERRORS as exc:
            log.warning("could not load blocked IPs: %r", exc)

    async def record_failure(self, ip: str) -> None:
        """Count one failed authentication; block the IP everywhere past the limit."""
        until = 0.0
        if self._pipe is not None:
            try:
                until = float(cast(int, await self._script.run(
                    self._pipe, [f"{self._prefix}authfail:{ip}", f"{self._prefix}block:{ip}"],
                    [self._window, self._limit, self._block_for])))
                if until:
                    assert self._client is not None
                    await self._client.publish(self.channel, f"{ip} {until}")
            except REDIS_ERRORS:
                until = self._record_locally(ip)
        else:
            until = self._record_locally(ip)
        if until:
            log.warning("client IP %s blocked for %ss after %d failed authentications",
                        ip, self._block_for, self._limit)
            self._blocked[ip] = until

    def _record_locally(self, ip: str) -> float:
        now = time.time()
        recent = [t for t in self._local_failures.get(ip, []) if t > now - self._window]
        recent.append(now)
        if len(recent) >= self._limit:
            self._local_failures.pop(ip, None)
            return now + self._block_for
        self._local_failures[ip] = recent
        if len(self._local_failures) > 100_000:
            self._local_failures.clear()
        return 0.0

