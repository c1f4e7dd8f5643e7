"""Step `check_permission`: the key must hold the permission its route declares."""

from __future__ import annotations

from gateway.http.errors import PermissionMissing
from gateway.pipeline.context import RequestContext

__all__ = ["check_permission"]


def check_permission(ctx: RequestContext) -> None:
    """Reads `ctx.route`, `ctx.key`. Raises `PermissionMissing` naming the permission."""
    assert ctx.route is not None and ctx.key is not None
    permission = ctx.route.permission
    if permission is not None and permission not in ctx.key.permissions:
        raise PermissionMissing(permission)
