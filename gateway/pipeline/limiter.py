"""The rate limiter: GCRA, cluster-wide in one Redis round trip, local if Redis is down.

GCRA keeps one timestamp per counter (the "theoretical arrival time"), so a limit of N per
period allows a burst of N and then one request every period/N. Redis's own clock is used,
so gateways with skewed clocks still share one budget.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import OrderedDict
from typing import cast

from redis.exceptions import NoScriptError, RedisError

from gateway.config.routes import RateLimit
from gateway.store.base import KeyRecord
from gateway.store.errors import REDIS_ERRORS
from gateway.store.resp import Pipe, Script

__all__ = ["RateLimiter"]

log = logging.getLogger(__name__)

# KEYS[1]: counter; ARGV[1]: emission interval (ms); ARGV[2]: limit.
# Returns {allowed, retry_after_ms, remaining}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * limit
if now < allow_at then
  return {0, allow_at - now, 0}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, math.ceil(new_tat - now)))
return {1, 0, math.floor((now - allow_at) / interval)}
"""


class _LocalGcra:
    """The same algorithm in process memory, for when Redis cannot be reached."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._tat: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries

    def hit(self, key: str, interval: float, limit: int) -> tuple[bool, float, int]:
        now = time.monotonic()
        tat = max(self._tat.get(key, now), now)
        new_tat = tat + interval
        allow_at = new_tat - interval * limit
        if now < allow_at:
            return False, allow_at - now, 0
        self._tat[key] = new_tat
        self._tat.move_to_end(key)
        while len(self._tat) > self._max:
            self._tat.popitem(last=False)
        return True, 0.0, math.floor((now - allow_at) / interval)


# One script call waiting for its batch: the counter key, the script's arguments, the answer.
_Call = tuple[str, list[float | int], asyncio.Future[list[int]]]


class _AutoPipeline:
    """EVALSHAs issued in one turn of the event loop go to Redis as one batch.

    Each request still costs exactly one round trip's worth of waiting, but N concurrent
    requests share one write and one read instead of N of each.
    """

    def __init__(self, pipe: Pipe, script: str) -> None:
        self._pipe = pipe
        self._script = Script(script)
        self._pending: list[_Call] = []
        self._tasks: set[asyncio.Task[list[object]]] = set()

    def call(self, key: str, args: list[float | int]) -> asyncio.Future[list[int]]:
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((key, args, future))
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._send(batch, reload=False)

    def _send(self, batch: list[_Call], *, reload: bool) -> None:
        commands = [self._script.command((key,), args) for key, args, _ in batch]
        if reload:  # Redis lost the script (a restart, SCRIPT FLUSH): load it, same batch
            commands.insert(0, self._script.load())
        # Connected, the pipe hands back the batch's future: answered by a callback, with no
        # task to create and step through. Connecting first, it is a coroutine: then a task.
        try:
            sending = self._pipe.execute(commands)
        except Exception as exc:  # whatever it is, the batch must hear of it
            self._fail(batch, exc)
            return
        sent = asyncio.ensure_future(sending)
        if isinstance(sent, asyncio.Task):  # held until done: the loop keeps no reference
            self._tasks.add(sent)
            sent.add_done_callback(self._tasks.discard)
        sent.add_done_callback(functools.partial(self._answer, batch, reload))

    def _answer(self, batch: list[_Call], reloaded: bool,
                sent: asyncio.Future[list[object]]) -> None:
        if sent.cancelled():
            self._fail(batch, RedisError("rate limiter shutting down"))
            return
        error = sent.exception()
        if error is not None:  # the callers decide (fallback to local limits)
            self._fail(batch, error)
            return
        results = sent.result()
        if reloaded:
            results = results[1:]  # the load's own reply
        elif any(isinstance(r, NoScriptError) for r in results):
            self._send(batch, reload=True)
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(cast(list[int], result))

    @staticmethod
    def _fail(batch: list[_Call], exc: BaseException) -> None:
        for _, _, future in batch:
            if not future.done():
                future.set_exception(exc)


class RateLimiter:
    """Counts requests against a `RateLimit`; Redis first, the local fallback while it is down."""

    def __init__(self, pipe: Pipe | None, prefix: str, retry_after: float = 1.0) -> None:
        self._prefix = prefix
        self._script = _AutoPipeline(pipe, _GCRA) if pipe is not None else None
        self._local = _LocalGcra()
        self._retry_after = retry_after
        self._down_until = 0.0
        self.rejected = 0

    def counter_key(self, limit: RateLimit, key: KeyRecord | None, client_ip: str) -> str:
        """The counter a request is counted on: its account's, its key's or its address's."""
        if limit.per == "account" and key is not None:
            who = f"a:{key.account_id}"
        elif limit.per == "key" and key is not None:
            who = f"k:{key.key_id}"
        else:
            who = f"i:{client_ip}"
        return f"{self._prefix}rl:{limit.bucket}:{who}"

    async def hit(self, key: str, limit: RateLimit) -> tuple[bool, float, int]:
        """(allowed, retry_after seconds, remaining)."""
        if self._script is not None and time.monotonic() >= self._down_until:
            try:
                allowed, retry_ms, remaining = await self._script.call(
                    key, [limit.emission_interval * 1000, limit.limit])
                return bool(allowed), float(retry_ms) / 1000, int(remaining)
            except REDIS_ERRORS as exc:
                if time.monotonic() >= self._down_until:
                    log.warning("redis unavailable: rate limits are per process until it "
                                "returns (%r)", exc)
                self._down_until = time.monotonic() + self._retry_after
        return self._local.hit(key, limit.emission_interval, limit.limit)

