"""Key lifecycle writes shared by the ops CLI and the admin UI: create, activate, delete.

Each change commits in PostgreSQL first (with a NOTIFY sent by the same transaction, so every
gateway hears of it even with Redis down), then tombstones the Redis copy and publishes on
the Redis channel. Every event is written to the audit log in the same transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from gateway.http.client_ip import IpAddress
from gateway.keys.tokens import generate_key_id, generate_token, hash_secret
from gateway.store.errors import REDIS_ERRORS
from gateway.store.invalidation import PG_CHANNEL
from gateway.store.redis import RedisKeyCache

__all__ = [
    "KeyInfo",
    "KeyNotFound",
    "activate_key",
    "audit",
    "create_key",
    "delete_key",
    "list_keys",
]

log = logging.getLogger(__name__)



class KeyNotFound(LookupError):
    """No such key (or it is already deleted, or not in the state the change needs)."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What may be shown about a key: never its secret or hash."""

    key_id: str
    user_id: int
    name: str
    permissions: tuple[str, ...]
    allowed_ips: tuple[str, ...]
    status: str
    created_at: datetime
    confirmed_at: datetime | None
    last_used_at: datetime | None


async def audit(
    conn: asyncpg.Connection,
    action: str,
    *,
    actor: str,
    user_id: int | None = None,
    key_id: str | None = None,
    client_ip: str | None = None,
    request_id: str | None = None,
    detail: dict[str, object] | None = None,
) -> None:
    """Append one row to the audit log."""
    await conn.execute(
        "INSERT INTO audit_log (user_id, actor, action, key_id, client_ip, request_id, detail)"
        " VALUES ($1, $2, $3, $4, $5::inet, $6, $7::jsonb)",
        user_id, actor, action, key_id, client_ip, request_id, json.dumps(detail or {}),
    )


async def create_key(
    conn: asyncpg.Connection,
    *,
    user_id: int,
    name: str,
    permissions: Sequence[str],
    allowed_ips: Sequence[IpAddress],
    actor: str,
    client_ip: str | None = None,
) -> str:
    """Insert a pending key and return its id; it cannot be used until `activate_key`."""
    key_id = generate_key_id()
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO api_keys (key_id, user_id, name, permissions, allowed_ips)"
            " VALUES ($1, $2, $3, $4, $5::inet[])",
            key_id, user_id, name, sorted(set(permissions)), [str(ip) for ip in allowed_ips],
        )
        await audit(conn, "key.created", actor=actor, user_id=user_id, key_id=key_id,
                    client_ip=client_ip,
                    detail={"name": name, "permissions": sorted(set(permissions)),
                            "ips": [str(ip) for ip in allowed_ips]})
    return key_id


async def activate_key(
    conn: asyncpg.Connection,
    key_id: str,
    *,
    pepper: str,
    hash_version: int,
    actor: str,
    client_ip: str | None = None,
    cache: RedisKeyCache | None = None,
) -> str:
    """Turn a pending key active; returns the token, which exists nowhere else. Show it once."""
    token, secret = generate_token(key_id)
    async with conn.transaction():
        user_id = await conn.fetchval(
            "UPDATE api_keys SET status = 'active', secret_hash = $2, hash_version = $3,"
            " confirmed_at = now() WHERE key_id = $1 AND status = 'pending' RETURNING user_id",
            key_id, hash_secret(secret, pepper), hash_version,
        )
        if user_id is None:
            raise KeyNotFound(key_id)
        await conn.execute("SELECT pg_notify($1, $2)", PG_CHANNEL, key_id)
        await audit(conn, "key.confirmed", actor=actor, user_id=user_id, key_id=key_id,
                    client_ip=client_ip)
    # Negative answers cached for this id must go.
    await _invalidate(cache, key_id, deleted=False)
    return token


async def delete_key(
    conn: asyncpg.Connection,
    key_id: str,
    *,
    actor: str,
    user_id: int | None = None,
    client_ip: str | None = None,
    cache: RedisKeyCache | None = None,
) -> None:
    """Delete a key for good: its hash is wiped, every gateway refuses it at once.

    With `user_id`, only that user's key can be deleted.
    """
    async with conn.transaction():
        owner = await conn.fetchval(
            "UPDATE api_keys SET status = 'deleted', secret_hash = NULL, deleted_at = now()"
            " WHERE key_id = $1 AND status <> 'deleted' AND ($2::bigint IS NULL OR user_id = $2)"
            " RETURNING user_id",
            key_id, user_id,
        )
        if owner is None:
            raise KeyNotFound(key_id)
        await conn.execute(
            "UPDATE key_confirmations SET superseded_at = now()"
            " WHERE key_id = $1 AND used_at IS NULL AND superseded_at IS NULL", key_id,
        )
        # Delivered to every LISTENing gateway when this transaction commits.
        await conn.execute("SELECT pg_notify($1, $2)", PG_CHANNEL, key_id)
        await audit(conn, "key.deleted", actor=actor, user_id=owner, key_id=key_id,
                    client_ip=client_ip)
    await _invalidate(cache, key_id, deleted=True)


async def _invalidate(cache: RedisKeyCache | None, key_id: str, *, deleted: bool) -> None:
    if cache is None:
        return
    try:
        await cache.invalidate(key_id, deleted=deleted)
    except REDIS_ERRORS as exc:
        # PostgreSQL's NOTIFY still reaches every gateway; the Redis copy expires or is
        # tombstoned by the gateways' reconciliation when Redis returns.
        log.warning("redis invalidation of key %s failed: %r", key_id, exc)


async def list_keys(conn: asyncpg.Connection, user_id: int, *,
                    include_deleted: bool = False) -> list[KeyInfo]:
    """A user's keys, newest first."""
    rows = await conn.fetch(
        "SELECT key_id, user_id, name, permissions, allowed_ips, status, created_at,"
        " confirmed_at, last_used_at FROM api_keys"
        " WHERE user_id = $1 AND ($2 OR status <> 'deleted') ORDER BY created_at DESC",
        user_id, include_deleted,
    )
    return [
        KeyInfo(
            key_id=r["key_id"], user_id=r["user_id"], name=r["name"],
            permissions=tuple(r["permissions"]),
            allowed_ips=tuple(str(ip) for ip in r["allowed_ips"]), status=str(r["status"]),
            created_at=r["created_at"], confirmed_at=r["confirmed_at"],
            last_used_at=r["last_used_at"],
        )
        for r in rows
    ]
