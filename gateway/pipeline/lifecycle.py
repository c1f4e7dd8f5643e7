"""Steps `check_key_expiry` and `check_withdrawal_address`: a key's lifecycle, decided per
request from the cached record, the clock and (for withdrawals) the body. No I/O."""

from __future__ import annotations

import time
from collections.abc import Awaitable

from gateway.keys.addresses import refusal_for_address, withdrawal_address_of
from gateway.keys.expiry import refusal_for_expiry
from gateway.pipeline.context import RequestContext

__all__ = ["check_key_expiry", "check_withdrawal_address"]


def check_key_expiry(ctx: RequestContext) -> None:
    """Reads `ctx.key` and the policy's `dormant_after_days`. Raises `KeyExpired` past the
    key's expiry (its own or a roll's overlap end) or past the dormancy policy.

    The clock is read per request: a process whose cache was warm before the expiry
    refuses the key after it, with no restart and no store round trip.
    """
    key = ctx.key
    assert key is not None
    dormant = ctx.services.table.policy.dormant_after
    if key.expires_at is None and dormant is None:  # the usual case: no clock needed
        return
    refusal = refusal_for_expiry(key, time.time(), dormant_after=dormant)
    if refusal is not None:
        raise refusal


def check_withdrawal_address(ctx: RequestContext) -> Awaitable[None] | None:
    """Reads `ctx.route.withdraw_address`, `ctx.key.withdraw_addresses`, `ctx.body` (waiting
    for `ctx.body_arrived` while the body is still coming).

    On a route with an address check, a key with allowed addresses is let through only
    when the body's address is one of them and past its cooldown. Raises
    `WithdrawBodyUnreadable` (400) when the address cannot be read, and
    `WithdrawAddressNotAllowed` (403 MISSING_PERMISSION) when it is not allowed (yet).
    The earlier steps have run by then: a client without a valid key never has its body
    read.
    """
    route, key = ctx.route, ctx.key
    assert route is not None and key is not None
    if route.withdraw_address is None or not key.withdraw_addresses:
        return None
    if ctx.body is None and ctx.body_arrived is not None:
        return _check_when_arrived(ctx)
    _check_address(ctx)
    return None


async def _check_when_arrived(ctx: RequestContext) -> None:
    assert ctx.body_arrived is not None
    ctx.body = await ctx.body_arrived
    _check_address(ctx)


def _check_address(ctx: RequestContext) -> None:
    route, key = ctx.route, ctx.key
    assert route is not None and route.withdraw_address is not None and key is not None
    # SECURITY: the very bytes checked here are the bytes forwarded (`ctx.body`).
    address = withdrawal_address_of(ctx.body, route.withdraw_address)
    refusal = refusal_for_address(key, address, time.time())
    if refusal is not None:
        raise refusal
