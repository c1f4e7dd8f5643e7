"""Step `apply_rate_limit`: the route's limit, counted by the process's `RateLimiter`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from gateway.config.routes import RateLimit
from gateway.http.errors import RateLimited
from gateway.pipeline.context import RequestContext
from gateway.pipeline.limiter import RateLimiter, Taken

__all__ = ["apply_rate_limit"]


def apply_rate_limit(ctx: RequestContext) -> Awaitable[None] | None:
    """Reads `ctx.route`, `ctx.key`, `ctx.client_ip`; adds `ctx.rate_limit`/`rate_remaining`.

    Raises `RateLimited` (429 with Retry-After). Answers at once while the process holds a
    lease of the counter's budget; waits for Redis only to get one.
    """
    limiter = ctx.services.limiter
    if limiter is None:
        return None
    route = ctx.route
    assert route is not None
    limit = route.rate_limit
    taken = limiter.take(limiter.counter_key(limit, ctx.key, ctx.client_ip_text), limit)
    if isinstance(taken, asyncio.Future):
        return _settle_later(ctx, limiter, limit, taken)
    _settle(ctx, limiter, limit, taken)
    return None


async def _settle_later(ctx: RequestContext, limiter: RateLimiter, limit: RateLimit,
                        taken: asyncio.Future[Taken]) -> None:
    _settle(ctx, limiter, limit, await taken)


def _settle(ctx: RequestContext, limiter: RateLimiter, limit: RateLimit, taken: Taken) -> None:
    allowed, retry_after, remaining = taken
    ctx.rate_limit = limit.limit
    ctx.rate_remaining = remaining
    if not allowed:
        limiter.rejected += 1
        raise RateLimited(retry_after, limit.limit)
