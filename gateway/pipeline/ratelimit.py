"""Step `apply_rate_limit`: the route's limit, counted by the process's `RateLimiter`."""

from __future__ import annotations

from collections.abc import Awaitable

from gateway.http.errors import RateLimited
from gateway.pipeline.context import RequestContext
from gateway.pipeline.limiter import RateLimiter

__all__ = ["apply_rate_limit"]


def apply_rate_limit(ctx: RequestContext) -> Awaitable[None] | None:
    """Reads `ctx.route`, `ctx.key`, `ctx.client_ip`; adds `ctx.rate_limit`/`rate_remaining`.

    Raises `RateLimited` (429 with Retry-After). With rate limits off, returns at once
    (no coroutine to make and await on every request).
    """
    limiter = ctx.services.limiter
    if limiter is None:
        return None
    return _count(ctx, limiter)


async def _count(ctx: RequestContext, limiter: RateLimiter) -> None:
    assert ctx.route is not None
    limit = ctx.route.rate_limit
    counter = limiter.counter_key(limit, ctx.key, ctx.client_ip_text)
    allowed, retry_after, remaining = await limiter.hit(counter, limit)
    ctx.rate_limit = limit.limit
    ctx.rate_remaining = remaining
    if not allowed:
        limiter.rejected += 1
        raise RateLimited(retry_after, limit.limit)
