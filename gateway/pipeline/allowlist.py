"""Step `check_ip`: the client address against the key's allowlist."""

from __future__ import annotations

from gateway.http.errors import IpNotAllowed
from gateway.pipeline.context import RequestContext

__all__ = ["check_ip"]


def check_ip(ctx: RequestContext) -> None:
    """Reads `ctx.key`, `ctx.client_ip`, `ctx.route`. Raises `IpNotAllowed` outside the key's
    allowlist, or when the route's permission requires an allowlist the key does not have."""
    key, route = ctx.key, ctx.route
    assert key is not None and route is not None
    if key.allowed_ips:
        # SECURITY: client_ip is the socket peer unless the peer is a trusted proxy.
        if not key.allows_ip(ctx.client_ip):
            raise IpNotAllowed.for_address(ctx.client_ip_text)
    elif route.permission in ctx.services.table.require_ip_allowlist:
        raise IpNotAllowed(
            f"The '{route.permission}' permission requires an API key with an IP allowlist"
        )
