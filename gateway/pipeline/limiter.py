"""The rate limiter: GCRA, cluster-wide through Redis, with local leases; local if Redis is down.

GCRA keeps one timestamp per counter (the "theoretical arrival time"), so a limit of N per
period allows a burst of N and then one request every period/N. Redis's own clock is used,
so gateways with skewed clocks still share one budget.

A process does not ask Redis for every request. It asks for a lease: a few requests' worth
of the budget, reserved in Redis at once, then spent locally without a round trip, and
renewed (in the background, before it runs out) while traffic on that counter goes on. A
lease is sized from the counter's recent rate, to last about `lease_ttl`, and never holds
more than a twentieth of the limit; tokens not spent within `lease_ttl` of their grant are
dropped. So the budget is never overspent by more than the leases outstanding: across P
processes, at most P x max(1, limit / 20) requests beyond what one exact counter would
allow, and a client that moves between processes may be refused up to as many requests
early (tokens reserved by a process it left). A refusal is remembered until the budget
frees, so a client over its limit costs no round trip either. `lease_ttl` 0 makes every
request ask Redis (exact, one round trip each).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
import time
from collections import OrderedDict
from typing import cast

from redis.exceptions import NoScriptError, RedisError

from gateway.config.routes import RateLimit
from gateway.store.base import KeyRecord
from gateway.store.resp import Pipe, Script

__all__ = ["RateLimiter", "Taken"]

log = logging.getLogger(__name__)

# KEYS[1]: counter; ARGV[1]: emission interval (ms); ARGV[2]: limit; ARGV[3]: requests wanted.
# Grants as many of them as the budget holds now. Returns {granted, retry_after_ms, room left}.
_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local room = math.floor((now + interval * limit - tat) / interval)
if room <= 0 then
  return {0, tat + interval - interval * limit - now, 0}
end
local granted = math.min(tonumber(ARGV[3]), room)
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, math.ceil(new_tat - now)))
return {granted, 0, room - granted}
"""

Taken = tuple[bool, float, int]  # (allowed, retry_after seconds, remaining)


class _LocalGcra:
    """The same algorithm in process memory, for when Redis cannot be reached."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._tat: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries

    def hit(self, key: str, interval: float, limit: int) -> Taken:
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


class _Lease:
    """What one process holds of one counter's budget."""

    __slots__ = ("denied_until", "expires", "granted_at", "pending", "remaining", "size",
                 "spent", "tokens", "waiters")

    def __init__(self) -> None:
        self.tokens = 0  # requests it may still let through
        self.remaining = 0  # the budget left in Redis after its last grant
        self.expires = 0.0  # monotonic time its tokens lapse
        self.denied_until = 0.0  # refused, without asking, until the budget frees
        self.granted_at = 0.0
        self.spent = 0  # tokens spent since the last grant: the counter's rate
        self.size = 1  # what it last asked for
        self.pending: asyncio.Future[list[int]] | None = None  # a renewal on its way
        self.waiters: collections.deque[asyncio.Future[Taken]] = collections.deque()


class RateLimiter:
    """Counts requests against a `RateLimit`; Redis first, the local fallback while it is down."""

    def __init__(self, pipe: Pipe | None, prefix: str, *, lease_ttl: float = 0.5,
                 retry_after: float = 1.0, max_leases: int = 100_000) -> None:
        self._prefix = prefix
        self._script = _AutoPipeline(pipe, _LEASE) if pipe is not None else None
        self._local = _LocalGcra()
        self._lease_ttl = lease_ttl
        self._retry_after = retry_after
        self._down_until = 0.0
        self._leases: dict[str, _Lease] = {}
        self._max_leases = max_leases
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

    def take(self, key: str, limit: RateLimit) -> Taken | asyncio.Future[Taken]:
        """Count one request: the answer at once from the lease (the usual case), or a future
        of it when Redis must be asked first."""
        now = time.monotonic()
        if self._script is None or now < self._down_until:
            return self._local.hit(key, limit.emission_interval, limit.limit)
        lease = self._leases.get(key)
        if lease is None:
            lease = self._new_lease(key, now)
        elif lease.denied_until > now:
            return False, lease.denied_until - now, 0
        elif lease.tokens and lease.expires > now:
            lease.tokens -= 1
            lease.spent += 1
            if lease.pending is None and lease.tokens * 2 < lease.size:
                self._renew(key, limit, lease, now, 0)  # before it runs out
            return True, 0.0, lease.remaining + lease.tokens
        waiter: asyncio.Future[Taken] = asyncio.get_running_loop().create_future()
        lease.waiters.append(waiter)
        if lease.pending is None:
            self._renew(key, limit, lease, now, len(lease.waiters))
        return waiter

    async def hit(self, key: str, limit: RateLimit) -> Taken:
        """`take`, awaited."""
        taken = self.take(key, limit)
        return await taken if isinstance(taken, asyncio.Future) else taken

    def _new_lease(self, key: str, now: float) -> _Lease:
        if len(self._leases) >= self._max_leases:  # forget lapsed leases of idle counters
            for stale in [k for k, held in self._leases.items()
                          if held.expires <= now and held.denied_until <= now
                          and held.pending is None and not held.waiters]:
                del self._leases[stale]
        lease = self._leases[key] = _Lease()
        return lease

    def _renew(self, key: str, limit: RateLimit, lease: _Lease, now: float,
               needed: int) -> None:
        assert self._script is not None
        most = max(1, limit.limit // 20)
        if lease.granted_at and self._lease_ttl > 0:
            rate = lease.spent / max(now - lease.granted_at, 1e-3)
            wanted = min(most, max(1, math.ceil(rate * self._lease_ttl)))
        else:
            wanted = 1
        lease.size = min(max(needed, wanted), limit.limit)
        lease.spent = 0
        lease.granted_at = now
        pending = lease.pending = self._script.call(
            key, [limit.emission_interval * 1000, limit.limit, lease.size])
        pending.add_done_callback(functools.partial(self._granted, key, limit, lease))

    def _granted(self, key: str, limit: RateLimit, lease: _Lease,
                 pending: asyncio.Future[list[int]]) -> None:
        lease.pending = None
        now = time.monotonic()
        error = None if pending.cancelled() else pending.exception()
        if pending.cancelled() or error is not None:
            self._mark_down(error or RedisError("rate limiter shutting down"))
            while lease.waiters:  # counted locally, as every request is while Redis is down
                waiter = lease.waiters.popleft()
                if not waiter.done():
                    waiter.set_result(self._local.hit(key, limit.emission_interval,
                                                      limit.limit))
            return
        granted, retry_ms, room = (int(n) for n in pending.result())
        if lease.expires <= now:
            lease.tokens = 0  # lapsed: never spent long after they were counted
        lease.tokens += granted
        lease.remaining = room
        lease.expires = now + self._lease_ttl
        waiters = lease.waiters
        while waiters and lease.tokens:
            waiter = waiters.popleft()
            if not waiter.done():
                lease.tokens -= 1
                lease.spent += 1
                waiter.set_result((True, 0.0, lease.remaining + lease.tokens))
        if granted == 0 and not lease.tokens:
            lease.denied_until = now + retry_ms / 1000
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result((False, retry_ms / 1000, 0))
        elif waiters:  # more came than were granted: ask for them
            self._renew(key, limit, lease, now, len(waiters))

    def _mark_down(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("redis unavailable: rate limits are per process until it returns (%r)",
                        exc)
        self._down_until = time.monotonic() + self._retry_after
