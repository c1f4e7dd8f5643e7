"""The request pipeline: its steps, in order, as data.

Each step takes the request's context, fills in what it found or raises a `GatewayError`.
Steps without I/O are plain functions; the others return an awaitable only when they must
wait (a warm key cache answers synchronously). A public route skips the key steps, and a
step that cannot apply under the gateway's settings (rate limits off) is left out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple

from gateway.http.errors import RouteNotFound
from gateway.pipeline.allowlist import check_ip
from gateway.pipeline.auth import check_client_blocked, lookup_key, parse_key
from gateway.pipeline.context import RequestContext
from gateway.pipeline.lifecycle import check_key_expiry, check_withdrawal_address
from gateway.pipeline.permissions import check_permission
from gateway.pipeline.ratelimit import apply_rate_limit

__all__ = ["PRIVATE_STEPS", "PUBLIC_STEPS", "Step", "Steps", "match_route", "run_steps",
           "steps_for"]

Step = Callable[[RequestContext], Awaitable[None] | None]


def match_route(ctx: RequestContext) -> None:
    """Reads `ctx.request.method`, `ctx.path`; adds `ctx.route`. Raises `RouteNotFound`."""
    route = ctx.services.table.match(ctx.request.method, ctx.path)
    if route is None:
        raise RouteNotFound
    ctx.route = route


PRIVATE_STEPS: tuple[Step, ...] = (
    check_client_blocked,
    parse_key,
    lookup_key,
    check_key_expiry,
    check_ip,
    check_permission,
    check_withdrawal_address,
    apply_rate_limit,
)
PUBLIC_STEPS: tuple[Step, ...] = (check_client_blocked, apply_rate_limit)


class Steps(NamedTuple):
    """The steps a gateway runs for private and for public routes."""

    private: tuple[Step, ...]
    public: tuple[Step, ...]


def steps_for(*, rate_limits: bool) -> Steps:
    """The steps under these settings: a step that cannot apply is not asked every request."""
    dropped = () if rate_limits else (apply_rate_limit,)
    return Steps(tuple(s for s in PRIVATE_STEPS if s not in dropped),
                 tuple(s for s in PUBLIC_STEPS if s not in dropped))


def run_steps(ctx: RequestContext, steps: Steps) -> Awaitable[None] | None:
    """Match the route and run its steps. Errors propagate to the caller (the edge).

    Returns None when every step answered at once (the warm path: nothing to wait for, no
    task), else an awaitable that runs the rest once the step that had to wait is done.
    The edge forwards the request once the steps are through.
    """
    if ctx.route is None:  # the edge may have matched it already (a route that reads_body)
        match_route(ctx)
    assert ctx.route is not None
    chosen = steps.public if ctx.route.is_public else steps.private
    for index, step in enumerate(chosen):
        pending = step(ctx)
        if pending is not None:
            return _finish(ctx, pending, chosen[index + 1:])
    return None


async def _finish(ctx: RequestContext, pending: Awaitable[None],
                  steps: tuple[Step, ...]) -> None:
    """The rest of the steps, once one had to wait (a cold key, a rate limit)."""
    await pending
    for step in steps:
        waiting = step(ctx)
        if waiting is not None:
            await waiting
