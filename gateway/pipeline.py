"""The request pipeline: DESIGN.md's steps, in order, as data.

Each step takes the request's context, fills in what it found or raises a `GatewayError`.
Steps without I/O are plain functions; the others return an awaitable only when they must
wait (a warm key cache answers synchronously). A public route skips the key steps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.abuse import check_client_blocked
from gateway.allowlist import check_ip
from gateway.auth import lookup_key, parse_key
from gateway.context import RequestContext
from gateway.errors import RouteNotFound
from gateway.forward import forward
from gateway.permissions import check_permission
from gateway.ratelimit import apply_rate_limit

__all__ = ["PRIVATE_STEPS", "PUBLIC_STEPS", "Step", "match_route", "run_pipeline"]

Step = Callable[[RequestContext], Awaitable[None] | None]


def match_route(ctx: RequestContext) -> None:
    """Reads `ctx.request.method`, `ctx.path`; adds `ctx.route`. Raises `RouteNotFound`."""
    route = ctx.gateway.table.match(ctx.request.method, ctx.path)
    if route is None:
        raise RouteNotFound
    ctx.route = route


PRIVATE_STEPS: tuple[Step, ...] = (
    check_client_blocked,
    parse_key,
    lookup_key,
    check_ip,
    check_permission,
    apply_rate_limit,
)
PUBLIC_STEPS: tuple[Step, ...] = (check_client_blocked, apply_rate_limit)


async def run_pipeline(ctx: RequestContext) -> web.StreamResponse:
    """Run every step for the matched route, then forward. Errors propagate to the caller."""
    match_route(ctx)
    assert ctx.route is not None
    for step in PUBLIC_STEPS if ctx.route.is_public else PRIVATE_STEPS:
        pending = step(ctx)
        if pending is not None:
            await pending
    return await forward(ctx)
