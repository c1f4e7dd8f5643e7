"""What a key's holder may learn about it (`GET /gateway/v1/key`): read from PostgreSQL, the
truth, so last use and a roll's new expiry show as they are. Never its secret or hash."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from gateway.keys.expiry import format_time

__all__ = ["describe_key"]

_KEY = (
    "SELECT key_id, name, permissions, allowed_ips, created_at, expires_at, last_used_at,"
    " host(last_used_ip) AS last_used_ip FROM api_keys WHERE key_id = $1 AND status = 'active'"
)
_ADDRESSES = (
    "SELECT address, effective_at FROM key_withdraw_addresses"
    " WHERE key_id = $1 AND effective_at IS NOT NULL ORDER BY address"
)


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value.timestamp())


async def describe_key(db: asyncpg.Pool | asyncpg.Connection,
                       key_id: str) -> dict[str, object] | None:
    """The introspection answer for an active key, or None. Times are ISO 8601 UTC."""
    row = await db.fetchrow(_KEY, key_id)
    if row is None:
        return None
    addresses = await db.fetch(_ADDRESSES, key_id)
    return {
        "key_id": row["key_id"],
        "name": row["name"],
        "permissions": sorted(row["permissions"]),
        "ip_allowlist": [str(ip) for ip in row["allowed_ips"]],
        "created_at": _time(row["created_at"]),
        "expires_at": _time(row["expires_at"]),
        "last_used_at": _time(row["last_used_at"]),
        "last_used_ip": row["last_used_ip"],
        "withdraw_addresses": [{"address": a["address"], "usable_from": _time(a["effective_at"])}
                               for a in addresses],
    }
