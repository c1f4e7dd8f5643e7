"""Step `apply_rate_limit`, with the in-process GCRA (the limiter with no Redis) and with a
limiter whose answers the test chooses."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.config.routes import RateLimit
from gateway.http.errors import RateLimited
from gateway.pipeline.context import RequestContext
from gateway.pipeline.limiter import RateLimiter, Taken
from gateway.pipeline.ratelimit import apply_rate_limit
from gateway.store.base import KeyRecord
from tests.support.pipeline import FakeServices, context

BALANCES = "/public/v1/account/balances"


@pytest.fixture
def services() -> FakeServices:
    return FakeServices()


async def hit(ctx: RequestContext) -> None:
    """The step, awaited when it must wait (a limiter that asks Redis)."""
    pending = apply_rate_limit(ctx)
    if pending is not None:
        await pending


def keyed(services: FakeServices, record: KeyRecord, path: str = BALANCES,
          ip: str = "198.51.100.7") -> RequestContext:
    ctx = context(services, path, ip=ip)
    ctx.key = record
    return ctx


def test_with_rate_limits_off_the_step_returns_at_once() -> None:
    services = FakeServices(rate_limits=False)
    assert apply_rate_limit(context(services)) is None


async def test_a_burst_of_the_limit_then_refused_with_retry_after(
        services: FakeServices) -> None:
    record = services.mint().record
    remaining = []
    for _ in range(3):  # the private default: 3 per 60 s per account
        ctx = keyed(services, record)
        await hit(ctx)
        assert ctx.rate_limit == 3
        remaining.append(ctx.rate_remaining)
    assert remaining == [2, 1, 0]
    ctx = keyed(services, record)
    with pytest.raises(RateLimited) as refused:
        await hit(ctx)
    assert refused.value.limit == 3
    assert 1 <= refused.value.retry_after <= 20  # one emission interval: 60 s / 3
    assert refused.value.headers()["X-RateLimit-Remaining"] == "0"
    assert ctx.rate_remaining == 0
    assert services.limiter is not None and services.limiter.rejected == 1


async def test_keys_of_one_account_share_its_budget(services: FakeServices) -> None:
    one = services.mint(account_id=41).record
    two = services.mint(account_id=41).record
    other = services.mint(account_id=42).record
    for record in (one, two, one):
        await hit(keyed(services, record))
    with pytest.raises(RateLimited):
        await hit(keyed(services, two))
    await hit(keyed(services, other))  # another account: its own budget


async def test_a_per_key_route_counts_each_key(services: FakeServices) -> None:
    one = services.mint(account_id=7).record
    two = services.mint(account_id=7).record
    for _ in range(2):
        await hit(keyed(services, one, "/public/v1/account/trades"))
    with pytest.raises(RateLimited):
        await hit(keyed(services, one, "/public/v1/account/trades"))
    await hit(keyed(services, two, "/public/v1/account/trades"))
    # Its own bucket: the account's default budget is untouched by it.
    for _ in range(3):
        await hit(keyed(services, one))


async def test_public_routes_count_per_address(services: FakeServices) -> None:
    for _ in range(2):
        await hit(context(services, "/public/v1/time", ip="198.51.100.7"))
    with pytest.raises(RateLimited):
        await hit(context(services, "/public/v1/time", ip="198.51.100.7"))
    await hit(context(services, "/public/v1/time", ip="198.51.100.8"))
    await hit(context(services, "/public/v1/time", ip="2001:db8::7"))


async def test_the_budget_refills_at_the_emission_interval(
        services: FakeServices, monkeypatch: pytest.MonkeyPatch) -> None:
    record = services.mint().record
    for _ in range(3):
        await hit(keyed(services, record))
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + 20.5)  # one interval: one request
    await hit(keyed(services, record))
    with pytest.raises(RateLimited):
        await hit(keyed(services, record))


class ChosenLimiter(RateLimiter):
    """A limiter whose every answer is the one given, later (as from Redis), recording what
    it was asked."""

    def __init__(self, answer: tuple[bool, float, int]) -> None:
        super().__init__(None, "chosen:")
        self.answer = answer
        self.asked: list[tuple[str, RateLimit]] = []

    def take(self, key: str, limit: RateLimit) -> Taken | asyncio.Future[Taken]:
        self.asked.append((key, limit))
        future: asyncio.Future[Taken] = asyncio.get_running_loop().create_future()
        future.set_result(self.answer)
        return future


def test_a_local_answer_needs_no_waiting(services: FakeServices) -> None:
    """The in-process GCRA (Redis unknown or down) answers at once: no awaitable."""
    ctx = keyed(services, services.mint().record)
    assert apply_rate_limit(ctx) is None
    assert ctx.rate_remaining == 2


async def test_the_step_passes_on_the_limiters_answer(services: FakeServices) -> None:
    chosen = services.limiter = ChosenLimiter((True, 0.0, 17))
    record = services.mint(account_id=9).record
    ctx = keyed(services, record)
    pending = apply_rate_limit(ctx)
    assert pending is not None  # an answer still to come is waited for
    await pending
    assert (ctx.rate_limit, ctx.rate_remaining) == (3, 17)
    assert chosen.asked == [("chosen:rl:private:a:9", ctx.route.rate_limit)]  # type: ignore[union-attr]
    chosen.answer = (False, 2.2, 0)
    with pytest.raises(RateLimited) as refused:
        await hit(keyed(services, record))
    assert refused.value.retry_after == 3  # rounded up: never "retry now"
    assert chosen.rejected == 1
    chosen.answer = (False, 0.0001, 0)
    with pytest.raises(RateLimited) as refused:
        await hit(keyed(services, record))
    assert refused.value.retry_after == 1
