"""Key lifecycle writes shared by the ops CLI and the admin UI: create, activate, roll, add
withdrawal addresses, delete.

Each change commits in PostgreSQL first (with a NOTIFY sent by the same transaction, so every
gateway hears of it even with Redis down), then tombstones or forgets the Redis copy and
publishes on the Redis channel. Every event is written to the audit log in the same
transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from gateway.config.routes import KeyPolicy
from gateway.http.client_ip import IpAddress
from gateway.keys.policy import policy_problems
from gateway.keys.tokens import generate_key_id, generate_token, hash_secret
from gateway.store.errors import REDIS_ERRORS
from gateway.store.invalidation import PG_CHANNEL
from gateway.store.redis import RedisKeyCache

__all__ = [
    "Activated",
    "AddressesConfirmed",
    "KeyInfo",
    "KeyNotFound",
    "PolicyRefused",
    "WithdrawAddress",
    "activate",
    "activate_key",
    "audit",
    "confirm_addresses",
    "create_key",
    "delete_key",
    "list_keys",
    "request_addresses",
    "roll_key",
]

log = logging.getLogger(__name__)



class KeyNotFound(LookupError):
    """No such key (or it is already deleted, or not in the state the change needs)."""


class PolicyRefused(ValueError):
    """The key policy does not allow this key; `problems` by field, each for the user."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__(" ".join(problems.values()))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class WithdrawAddress:
    address: str
    usable_from: datetime | None  # None: waits for its emailed confirmation


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
    last_used_ip: str | None = None
    expires_at: datetime | None = None  # its own, or the end of a roll's overlap
    rolled_from: str | None = None  # the key this one replaces
    roll_overlap: float | None = None  # seconds the replaced key works after confirmation
    replaced_by: str | None = None  # the active key a confirmed roll made from this one
    withdraw_addresses: tuple[WithdrawAddress, ...] = ()

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True)
class Activated:
    """A key just activated: its token (show it once) and, for a roll, the replaced key."""

    token: str
    rolled_from: str | None = None
    old_expires_at: datetime | None = None  # when the replaced key stops working


@dataclass(frozen=True, slots=True)
class AddressesConfirmed:
    addresses: tuple[str, ...]
    usable_from: datetime | None  # None: nothing was waiting for this link


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
    allowed_ips: Sequence[IpAddress | str],
    actor: str,
    client_ip: str | None = None,
    lifetime: float | None = None,
    withdraw_addresses: Sequence[str] = (),
    policy: KeyPolicy | None = None,
) -> str:
    """Insert a pending key and return its id; it cannot be used until `activate_key`.

    `lifetime`: seconds from now to its expiry (None: never). `withdraw_addresses` are
    usable at once. With `policy`, a key it forbids raises `PolicyRefused`.
    """
    perms = sorted(set(permissions))
    if policy is not None:
        problems = policy_problems(policy, permissions=perms, has_ips=bool(allowed_ips),
                                   lifetime=lifetime)
        if problems:
            raise PolicyRefused(problems)
    key_id = generate_key_id()
    ips = [str(ip) for ip in allowed_ips]
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO api_keys (key_id, user_id, name, permissions, allowed_ips, lifetime,"
            " expires_at) VALUES ($1, $2, $3, $4, $5::inet[], $6,"
            " now() + make_interval(secs => $6))",
            key_id, user_id, name, perms, ips, lifetime,
        )
        await _insert_addresses(conn, key_id, [(a, None) for a in withdraw_addresses])
        detail: dict[str, object] = {"name": name, "permissions": perms, "ips": ips}
        if lifetime is not None:
            detail["lifetime_seconds"] = lifetime
        if withdraw_addresses:
            detail["withdraw_addresses"] = list(withdraw_addresses)
        await audit(conn, "key.created", actor=actor, user_id=user_id, key_id=key_id,
                    client_ip=client_ip, detail=detail)
    return key_id


async def _insert_addresses(conn: asyncpg.Connection, key_id: str,
                            addresses: Sequence[tuple[str, datetime | None]]) -> None:
    """Addresses usable from the given time (None: now)."""
    if addresses:
        await conn.executemany(
            "INSERT INTO key_withdraw_addresses (key_id, address, effective_at)"
            " VALUES ($1, $2, coalesce($3, now()))",
            [(key_id, address, at) for address, at in addresses],
        )


async def roll_key(
    conn: asyncpg.Connection,
    key_id: str,
    *,
    overlap: float,
    actor: str,
    user_id: int | None = None,
    client_ip: str | None = None,
    policy: KeyPolicy | None = None,
) -> str:
    """A pending key replacing `key_id`: same account, name, permissions, IPs and usable
    withdrawal addresses, and the same lifetime from now. Confirming it (`activate`) ends
    the old key `overlap` seconds later (or at its own expiry, if sooner).

    With `user_id`, only that user's key can be rolled. `KeyNotFound` unless it is active;
    `PolicyRefused` when the policy forbids the new key (rolls keep to it as new keys do).
    """
    async with conn.transaction():
        old = await conn.fetchrow(
            "SELECT user_id, name, permissions, allowed_ips, lifetime FROM api_keys"
            " WHERE key_id = $1 AND status = 'active' AND ($2::bigint IS NULL OR user_id = $2)"
            " FOR UPDATE", key_id, user_id)
        if old is None:
            raise KeyNotFound(key_id)
        lifetime: float | None = old["lifetime"]
        if policy is not None and policy.max_key_lifetime_days is not None:
            cap = policy.max_key_lifetime_days * 86400.0
            lifetime = cap if lifetime is None else min(lifetime, cap)
        ips = [str(ip) for ip in old["allowed_ips"]]
        if policy is not None:
            problems = policy_problems(policy, permissions=old["permissions"],
                                       has_ips=bool(ips), lifetime=lifetime)
            if problems:
                raise PolicyRefused(problems)
        new_id = generate_key_id()
        await conn.execute(
            "INSERT INTO api_keys (key_id, user_id, name, permissions, allowed_ips, lifetime,"
            " expires_at, rolled_from, roll_overlap) VALUES ($1, $2, $3, $4, $5::inet[], $6,"
            " now() + make_interval(secs => $6), $7, $8)",
            new_id, old["user_id"], old["name"], list(old["permissions"]), ips, lifetime,
            key_id, overlap,
        )
        rows = await conn.fetch(
            "SELECT address, effective_at FROM key_withdraw_addresses"
            " WHERE key_id = $1 AND effective_at IS NOT NULL", key_id)
        await _insert_addresses(conn, new_id, [(r["address"], r["effective_at"]) for r in rows])
        await audit(conn, "key.roll_requested", actor=actor, user_id=old["user_id"],
                    key_id=new_id, client_ip=client_ip,
                    detail={"old_key_id": key_id, "new_key_id": new_id,
                            "overlap_seconds": overlap})
    return new_id


async def activate(
    conn: asyncpg.Connection,
    key_id: str,
    *,
    pepper: str,
    hash_version: int,
    actor: str,
    client_ip: str | None = None,
    cache: RedisKeyCache | None = None,
) -> Activated:
    """Turn a pending key active, and start the overlap of the key it rolls (if any).

    The token exists nowhere else: show it once.
    """
    token, secret = generate_token(key_id)
    old_expires_at: datetime | None = None
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE api_keys SET status = 'active', secret_hash = $2, hash_version = $3,"
            " confirmed_at = now(), changed_at = now(),"
            " expires_at = now() + make_interval(secs => lifetime)"
            " WHERE key_id = $1 AND status = 'pending'"
            " RETURNING user_id, rolled_from, roll_overlap",
            key_id, hash_secret(secret, pepper), hash_version,
        )
        if row is None:
            raise KeyNotFound(key_id)
        await conn.execute("SELECT pg_notify($1, $2)", PG_CHANNEL, key_id)
        await audit(conn, "key.confirmed", actor=actor, user_id=row["user_id"], key_id=key_id,
                    client_ip=client_ip)
        old_id: str | None = row["rolled_from"]
        if old_id is not None:
            # The overlap ends the old key, unless its own expiry comes first.
            old_expires_at = await conn.fetchval(
                "UPDATE api_keys SET expires_at = least(coalesce(expires_at, 'infinity'),"
                " now() + make_interval(secs => $2)), changed_at = now()"
                " WHERE key_id = $1 AND status = 'active' RETURNING expires_at",
                old_id, row["roll_overlap"] or 0.0,
            )
            await conn.execute("SELECT pg_notify($1, $2)", PG_CHANNEL, old_id)
            await audit(conn, "key.rolled", actor=actor, user_id=row["user_id"],
                        key_id=old_id, client_ip=client_ip,
                        detail={"old_key_id": old_id, "new_key_id": key_id,
                                "overlap_seconds": row["roll_overlap"],
                                "old_expires_at": old_expires_at.isoformat()
                                if old_expires_at else None})
    # Negative answers cached for the new id must go, and the old key's expiry must arrive.
    await _invalidate(cache, key_id, deleted=False)
    if old_id is not None:
        await _invalidate(cache, old_id, deleted=False)
    return Activated(token, old_id, old_expires_at)


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
    """`activate`, returning only the token."""
    done = await activate(conn, key_id, pepper=pepper, hash_version=hash_version, actor=actor,
                          client_ip=client_ip, cache=cache)
    return done.token


async def request_addresses(
    conn: asyncpg.Connection,
    key_id: str,
    addresses: Sequence[str],
    *,
    confirmation_id: int,
    actor: str,
    user_id: int,
    client_ip: str | None = None,
) -> None:
    """Add addresses to a live key, waiting for the emailed link `confirmation_id`; those
    still waiting from an earlier link wait for this one instead (only the newest works)."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE key_withdraw_addresses SET confirmation_id = $2"
            " WHERE key_id = $1 AND effective_at IS NULL", key_id, confirmation_id)
        await conn.executemany(
            "INSERT INTO key_withdraw_addresses (key_id, address, confirmation_id)"
            " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            [(key_id, address, confirmation_id) for address in addresses])
        await audit(conn, "key.addresses_requested", actor=actor, user_id=user_id,
                    key_id=key_id, client_ip=client_ip,
                    detail={"withdraw_addresses": list(addresses)})


async def confirm_addresses(
    conn: asyncpg.Connection,
    key_id: str,
    confirmation_id: int,
    *,
    cooldown: float,
    actor: str,
    user_id: int,
    client_ip: str | None = None,
    cache: RedisKeyCache | None = None,
) -> AddressesConfirmed:
    """The emailed link was opened: its addresses become usable after `cooldown` seconds."""
    async with conn.transaction():
        rows = await conn.fetch(
            "UPDATE key_withdraw_addresses SET effective_at = now() + make_interval(secs => $3)"
            " WHERE key_id = $1 AND confirmation_id = $2 AND effective_at IS NULL"
            " RETURNING address, effective_at", key_id, confirmation_id, cooldown)
        if not rows:
            return AddressesConfirmed((), None)
        await conn.execute("UPDATE api_keys SET changed_at = now() WHERE key_id = $1", key_id)
        await conn.execute("SELECT pg_notify($1, $2)", PG_CHANNEL, key_id)
        usable_from: datetime = rows[0]["effective_at"]
        addresses = tuple(sorted(r["address"] for r in rows))
        await audit(conn, "key.addresses_added", actor=actor, user_id=user_id, key_id=key_id,
                    client_ip=client_ip,
                    detail={"withdraw_addresses": list(addresses),
                            "usable_from": usable_from.isoformat()})
    await _invalidate(cache, key_id, deleted=False)
    return AddressesConfirmed(addresses, usable_from)


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
        "SELECT k.key_id, k.user_id, k.name, k.permissions, k.allowed_ips, k.status,"
        " k.created_at, k.confirmed_at, k.last_used_at, host(k.last_used_ip) AS last_used_ip,"
        " k.expires_at, k.rolled_from, k.roll_overlap,"
        " (SELECT n.key_id FROM api_keys n WHERE n.rolled_from = k.key_id"
        "  AND n.status = 'active' ORDER BY n.confirmed_at DESC LIMIT 1) AS replaced_by"
        " FROM api_keys k"
        " WHERE k.user_id = $1 AND ($2 OR k.status <> 'deleted') ORDER BY k.created_at DESC",
        user_id, include_deleted,
    )
    addresses: dict[str, list[WithdrawAddress]] = {}
    for r in await conn.fetch(
            "SELECT a.key_id, a.address, a.effective_at FROM key_withdraw_addresses a"
            " JOIN api_keys k ON k.key_id = a.key_id WHERE k.user_id = $1"
            " ORDER BY a.added_at, a.address", user_id):
        addresses.setdefault(r["key_id"], []).append(
            WithdrawAddress(r["address"], r["effective_at"]))
    return [
        KeyInfo(
            key_id=r["key_id"], user_id=r["user_id"], name=r["name"],
            permissions=tuple(r["permissions"]),
            allowed_ips=tuple(str(ip) for ip in r["allowed_ips"]), status=str(r["status"]),
            created_at=r["created_at"], confirmed_at=r["confirmed_at"],
            last_used_at=r["last_used_at"], last_used_ip=r["last_used_ip"],
            expires_at=r["expires_at"], rolled_from=r["rolled_from"],
            roll_overlap=r["roll_overlap"], replaced_by=r["replaced_by"],
            withdraw_addresses=tuple(addresses.get(r["key_id"], ())),
        )
        for r in rows
    ]

