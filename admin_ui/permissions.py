"""The permission names offered as checkboxes: those of the route config, re-read on change."""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from gateway.config.route_file import ConfigError, load_route_table
from gateway.config.routes import KeyPolicy

__all__ = ["PERMISSIONS_KEY", "PermissionCatalog"]

log = logging.getLogger(__name__)


class PermissionCatalog:
    """Permissions (name -> description) from the route file; a permission added to the file
    shows up without a restart, and a broken file keeps the last good list."""

    def __init__(self, path: Path, upstream_override: str | None = None) -> None:
        self._path = path
        self._upstream = upstream_override
        self._mtime: float | None = None
        self._permissions: dict[str, str] = {}
        self._policy = KeyPolicy()
        self._load()

    def _load(self) -> None:
        try:
            mtime = self._path.stat().st_mtime
        except OSError:
            return
        if mtime == self._mtime:
            return
        try:
            table = load_route_table(self._path, self._upstream)
        except ConfigError as exc:
            if self._mtime is None:
                raise
            log.error("route file changed but is invalid; keeping the permissions we had:\n%s",
                      "\n".join(exc.problems))
        else:
            self._permissions = dict(table.permissions)
            self._policy = table.policy
        self._mtime = mtime

    @property
    def permissions(self) -> dict[str, str]:
        self._load()
        return self._permissions

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.permissions)

    @property
    def require_ip_allowlist(self) -> frozenset[str]:
        """Permissions the route file's policy allows only on keys with an IP allowlist."""
        return self.policy.require_ip_allowlist

    @property
    def policy(self) -> KeyPolicy:
        """The route file's key policy (allowlist, lifetime, dormancy)."""
        self._load()
        return self._policy


PERMISSIONS_KEY: web.AppKey[PermissionCatalog] = web.AppKey("permissions", PermissionCatalog)
