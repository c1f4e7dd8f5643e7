"""Needs: Redis (tests/conftest.py).

The rate limiter's leases (gateway/pipeline/limiter.py) against a real Redis, with three
limiters standing for three gateway processes sharing one budget: the budget is not overspent
beyond the documented bound, a warm counter costs no round trip per request, a refusal is
remembered until the budget frees, and `lease_ttl` 0 asks Redis every time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
import redis.asyncio as aioredis

from gateway.config.routes import RateLimit
from gateway.pipeline.limiter import RateLimiter
from gateway.store.resp import Command, Pipe, open_pipe

pytestmark = pytest.mark.integration


class CountingPipe:
    """A pipe that counts the script calls it carries (one per lease asked for)."""

    def __init__(self, inner: Pipe) -> None:
        self.inner = inner
        self.calls = 0

    def execute(self, commands: Sequence[Command]) -> object:
        self.calls += sum(1 for command in commands if command[0] in ("EVALSHA", b"EVALSHA"))
        return self.inner.execute(commands)


@pytest.fixture
async def pipes(redis_url: str) -> AsyncIterator[list[CountingPipe]]:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(3)]
    opened = [open_pipe(client) for client in clients]
    yield [CountingPipe(pipe) for pipe in opened]
    for pipe, client in zip(opened, clients, strict=True):
        await pipe.aclose()  # type: ignore[attr-defined]
        await client.aclose()


async def _take(limiter: RateLimiter, key: str, limit: RateLimit) -> bool:
    taken = limiter.take(key, limit)
    allowed, _, _ = await taken if isinstance(taken, asyncio.Future) else taken
    return allowed


async def test_three_gateways_never_overspend_beyond_their_leases(
        pipes: list[CountingPipe], redis_prefix: str) -> None:
    limit = RateLimit(limit=200, period=60.0, per="account", bucket="private")
    limiters = [RateLimiter(pipe, redis_prefix) for pipe in pipes]  # type: ignore[arg-type]
    key = f"{redis_prefix}rl:private:a:1"
    # A client spreading 1,000 requests over the three as fast as they answer.
    allowed = 0
    for round_ in range(250):
        results = await asyncio.gather(*(
            _take(limiters[(round_ + n) % 3], key, limit) for n in range(4)))
        allowed += sum(results)
    # Every request let through spent a token Redis granted: within one burst nothing is
    # overspent; tokens still leased out when the budget ran dry go unspent, at most a lease
    # per process.
    bound = 3 * max(1, limit.limit // 20)
    assert limit.limit - bound <= allowed <= limit.limit, allowed


async def test_a_warm_counter_is_spent_without_a_round_trip_per_request(
        pipes: list[CountingPipe], redis_prefix: str) -> None:
    limit = RateLimit(limit=1_000_000, period=60.0, per="account", bucket="private")
    limiter = RateLimiter(pipes[0], redis_prefix)  # type: ignore[arg-type]
    key = f"{redis_prefix}rl:private:a:2"
    for _ in range(2000):
        assert await _take(limiter, key, limit)
        await asyncio.sleep(0)  # one request per turn of the loop, as a busy gateway sees
    assert pipes[0].calls < 2000 / 10, pipes[0].calls


async def test_a_refusal_is_remembered_until_the_budget_frees(
        pipes: list[CountingPipe], redis_prefix: str) -> None:
    limit = RateLimit(limit=3, period=0.6, per="ip", bucket="public")
    limiter = RateLimiter(pipes[0], redis_prefix)  # type: ignore[arg-type]
    key = f"{redis_prefix}rl:public:i:203.0.113.9"
    assert [await _take(limiter, key, limit) for _ in range(4)] == [True, True, True, False]
    calls = pipes[0].calls
    for _ in range(50):  # refused at once, from memory
        refused = limiter.take(key, limit)
        assert not isinstance(refused, asyncio.Future) and refused[0] is False
        assert 0 < refused[1] <= 0.6
    assert pipes[0].calls == calls
    await asyncio.sleep(0.25)  # one request's worth of the budget is back
    assert await _take(limiter, key, limit)


async def test_lease_ttl_zero_asks_redis_for_every_request(
        pipes: list[CountingPipe], redis_prefix: str) -> None:
    limit = RateLimit(limit=1_000_000, period=60.0, per="account", bucket="private")
    limiter = RateLimiter(pipes[0], redis_prefix, lease_ttl=0)  # type: ignore[arg-type]
    key = f"{redis_prefix}rl:private:a:3"
    for _ in range(20):
        taken = limiter.take(key, limit)
        assert isinstance(taken, asyncio.Future)
        assert (await taken)[0]
    assert pipes[0].calls == 20
