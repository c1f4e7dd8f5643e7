"""Steps `check_client_blocked`, `parse_key` and `lookup_key`: who is calling, decided offline
first, then by the store."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable

from gateway.http.errors import ClientIpBlocked, KeyInvalid, KeyMissing
from gateway.keys.tokens import parse_token, verify_secret
from gateway.pipeline.context import RequestContext
from gateway.store.base import KeyRecord
from gateway.store.memory import MISS

__all__ = ["check_client_blocked", "lookup_key", "parse_key"]

_BEARER = "bearer "


def check_client_blocked(ctx: RequestContext) -> None:
    """Reads `ctx.client_ip`. Raises `ClientIpBlocked` while the IP is blocked. No I/O."""
    guard = ctx.services.guard
    if not guard.has_blocks:  # the usual case: skip formatting the address
        return
    left = guard.blocked_for(ctx.client_ip_text)
    if left:
        raise ClientIpBlocked(int(left) + 1)


def parse_key(ctx: RequestContext) -> None:
    """Reads the `Authorization` header(s); adds `ctx.token`.

    Raises `KeyMissing` without a key, `KeyInvalid` for a malformed token, another scheme,
    or two keys in one request. No I/O: junk never reaches Redis or PostgreSQL.
    """
    values = ctx.request.authorization
    if not values:
        raise KeyMissing
    if len(values) > 1:
        raise KeyInvalid  # two keys in one request: refuse rather than pick one
    value = values[0]
    known = ctx.connection
    # The same value as the last proven one on this connection: the same token. Compared in
    # constant time: a proxy in front may carry several clients over one connection.
    if (known is not None and known.authorization is not None and value.isascii()
            and hmac.compare_digest(value, known.authorization)):
        ctx.token = known.token
        return
    if value[:7].lower() != _BEARER:
        raise KeyInvalid
    token = parse_token(value[7:].strip())
    if token is None:
        raise KeyInvalid
    ctx.token = token


def lookup_key(ctx: RequestContext) -> Awaitable[None] | None:
    """Reads `ctx.token`; adds `ctx.key`. Raises `KeyInvalid`, or `StoreUnavailable` (503).

    A warm in-process cache answers without awaiting anything.
    """
    assert ctx.token is not None
    cached = ctx.services.store.cached(ctx.token.key_id)
    if cached is MISS:
        return _lookup_slow(ctx)
    _accept(ctx, cached)  # type: ignore[arg-type]
    return None


async def _lookup_slow(ctx: RequestContext) -> None:
    assert ctx.token is not None
    _accept(ctx, await ctx.services.store.get(ctx.token.key_id))


def _accept(ctx: RequestContext, record: KeyRecord | None) -> None:
    token = ctx.token
    assert token is not None
    # SECURITY: unknown, pending and deleted keys all read as None: one answer, no oracle.
    if record is None:
        raise KeyInvalid
    known = ctx.connection
    # Proven on this connection against this very cache entry: the hash would match again.
    # A deleted key is gone from the cache, a refilled one is a new record: both re-verify.
    if known is None or known.token is not token or known.key is not record:
        if not verify_secret(token.secret, record.secret_hash, record.hash_version,
                             ctx.services.peppers):
            raise KeyInvalid
        if known is not None:
            known.authorization = ctx.request.authorization[0]
            known.token, known.key = token, record
    ctx.key = record
