"""All of the admin UI's SQL (key creation, activation and deletion go through
`gateway.keys.lifecycle`, which the ops CLI shares)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

__all__ = ["POOL_KEY",
    "AccountRow",
    "AuditRow",
    "ConfirmationRow",
    "LinkRow",
    "SessionRow",
    "UsageRow",
    "accept_totp_step",
    "count_live_keys",
    "count_recovery_codes",
    "delete_session",
    "delete_user_sessions",
    "disable_totp",
    "enable_totp",
    "find_account_link",
    "find_confirmation",
    "get_account",
    "get_account_by_email",
    "get_key_owner",
    "insert_account_link",
    "insert_confirmation",
    "insert_session",
    "key_usage",
    "list_audit",
    "load_session",
    "lock_account",
    "mark_account_link_used",
    "mark_confirmation_used",
    "mark_email_verified",
    "purge_expired_sessions",
    "set_password_hash",
    "set_pending_totp",
    "use_recovery_code",
]


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: int
    email: str
    password_hash: str
    email_verified: bool
    totp_enabled: bool
    totp_secret_enc: str | None
    totp_last_step: int | None

    def __repr__(self) -> str:
        # SECURITY: keep hashes and the sealed TOTP secret out of logs.
        return f"AccountRow(id={self.id}, email={self.email!r})"


@dataclass(frozen=True, slots=True)
class SessionRow:
    user_id: int
    is_partial: bool
    account: AccountRow


@dataclass(frozen=True, slots=True)
class LinkRow:
    """An emailed link as stored, with the database's clock for expiry checks."""

    id: int
    user_id: int
    expires_at: datetime
    used_at: datetime | None
    superseded_at: datetime | None
    now: datetime


@dataclass(frozen=True, slots=True)
class ConfirmationRow:
    link: LinkRow
    key_id: str
    key_name: str
    key_status: str
    purpose: str = "key"  # 'key': activates a new key; 'addresses': adds addresses to one


@dataclass(frozen=True, slots=True)
class UsageRow:
    hour: datetime
    code: str  # '' let through, else the gateway's error code
    requests: int


@dataclass(frozen=True, slots=True)
class AuditRow:
    at: datetime
    action: str
    key_id: str | None
    client_ip: str | None
    detail: dict[str, Any]


# Constant text only: every value goes through a $n parameter.
_ACCOUNT_COLUMNS = ("u.id, u.email, u.password_hash, u.email_verified, u.totp_enabled,"
                    " u.totp_secret_enc, u.totp_last_step")
_SELECT_ACCOUNT = f"SELECT {_ACCOUNT_COLUMNS} FROM users u"  # noqa: S608
_SELECT_SESSION = (f"SELECT s.user_id, s.is_partial, {_ACCOUNT_COLUMNS}"  # noqa: S608
                   " FROM admin_sessions s JOIN users u ON u.id = s.user_id")
_SELECT_CONFIRMATION = (
    "SELECT c.id, k.user_id, c.expires_at, c.used_at, c.superseded_at, now() AS now,"
    " k.key_id, k.name, k.status::text AS status, c.purpose"
    " FROM key_confirmations c JOIN api_keys k ON k.key_id = c.key_id WHERE c.token_hash = $1"
)


def _account(row: asyncpg.Record) -> AccountRow:
    return AccountRow(
        id=row["id"], email=row["email"], password_hash=row["password_hash"],
        email_verified=row["email_verified"], totp_enabled=row["totp_enabled"],
        totp_secret_enc=row["totp_secret_enc"], totp_last_step=row["totp_last_step"],
    )


# --- accounts ----------------------------------------------------------------------------


async def get_account(conn: asyncpg.Connection, user_id: int) -> AccountRow | None:
    row = await conn.fetchrow(_SELECT_ACCOUNT + " WHERE u.id = $1", user_id)
    return None if row is None else _account(row)


async def get_account_by_email(conn: asyncpg.Connection, email: str) -> AccountRow | None:
    row = await conn.fetchrow(
        _SELECT_ACCOUNT + " WHERE lower(u.email) = lower($1)", email.strip()
    )
    return None if row is None else _account(row)


async def mark_email_verified(conn: asyncpg.Connection, user_id: int) -> None:
    await conn.execute("UPDATE users SET email_verified = true WHERE id = $1", user_id)


async def set_password_hash(conn: asyncpg.Connection, user_id: int, password_hash: str) -> None:
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id,
                       password_hash)


# --- sessions ----------------------------------------------------------------------------


async def insert_session(conn: asyncpg.Connection, id_hash: bytes, user_id: int, *,
                         is_partial: bool, ttl: float, client_ip: str | None) -> None:
    await conn.execute(
        "INSERT INTO admin_sessions (id_hash, user_id, is_partial, expires_at, client_ip)"
        " VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5::inet)",
        id_hash, user_id, is_partial, ttl, client_ip,
    )


async def load_session(conn: asyncpg.Connection, id_hash: bytes) -> SessionRow | None:
    row = await conn.fetchrow(
        _SELECT_SESSION + " WHERE s.id_hash = $1 AND s.expires_at > now()",
        id_hash,
    )
    if row is None:
        return None
    return SessionRow(user_id=row["user_id"], is_partial=row["is_partial"],
                      account=_account(row))


async def delete_session(conn: asyncpg.Connection, id_hash: bytes) -> None:
    await conn.execute("DELETE FROM admin_sessions WHERE id_hash = $1", id_hash)


async def delete_user_sessions(conn: asyncpg.Connection, user_id: int) -> None:
    await conn.execute("DELETE FROM admin_sessions WHERE user_id = $1", user_id)


async def purge_expired_sessions(conn: asyncpg.Connection) -> int:
    result: str = await conn.execute("DELETE FROM admin_sessions WHERE expires_at <= now()")
    return int(result.rsplit(" ", 1)[-1])


# --- emailed links -----------------------------------------------------------------------


def _link(row: asyncpg.Record) -> LinkRow:
    return LinkRow(id=row["id"], user_id=row["user_id"], expires_at=row["expires_at"],
                   used_at=row["used_at"], superseded_at=row["superseded_at"], now=row["now"])


async def insert_account_link(conn: asyncpg.Connection, user_id: int, purpose: str,
                              token_hash: bytes, ttl: float) -> None:
    """Store a new link; every earlier unused link of this purpose stops working."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE account_tokens SET superseded_at = now() WHERE user_id = $1"
            " AND purpose = $2 AND used_at IS NULL AND superseded_at IS NULL",
            user_id, purpose,
        )
        await conn.execute(
            "INSERT INTO account_tokens (user_id, purpose, token_hash, expires_at)"
            " VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
            user_id, purpose, token_hash, ttl,
        )


async def find_account_link(conn: asyncpg.Connection, purpose: str,
                            token_hash: bytes) -> LinkRow | None:
    row = await conn.fetchrow(
        "SELECT id, user_id, expires_at, used_at, superseded_at, now() AS now"
        " FROM account_tokens WHERE token_hash = $1 AND purpose = $2",
        token_hash, purpose,
    )
    return None if row is None else _link(row)


async def mark_account_link_used(conn: asyncpg.Connection, link_id: int) -> bool:
    """Use a link once: False when another request used it first (or it lapsed meanwhile)."""
    used = await conn.fetchval(
        "UPDATE account_tokens SET used_at = now() WHERE id = $1 AND used_at IS NULL"
        " AND superseded_at IS NULL AND expires_at > now() RETURNING id", link_id,
    )
    return used is not None


async def insert_confirmation(conn: asyncpg.Connection, key_id: str, token_hash: bytes,
                              ttl: float, purpose: str = "key") -> int:
    """Store a key's confirmation link and return its id; earlier links for the key stop
    working, whatever they were for."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE key_confirmations SET superseded_at = now() WHERE key_id = $1"
            " AND used_at IS NULL AND superseded_at IS NULL", key_id,
        )
        link_id: int = await conn.fetchval(
            "INSERT INTO key_confirmations (key_id, token_hash, expires_at, purpose)"
            " VALUES ($1, $2, now() + make_interval(secs => $3), $4) RETURNING id",
            key_id, token_hash, ttl, purpose,
        )
    return link_id


async def find_confirmation(conn: asyncpg.Connection, token_hash: bytes, *,
                            for_update: bool = False) -> ConfirmationRow | None:
    query = _SELECT_CONFIRMATION + " FOR UPDATE OF c" if for_update else _SELECT_CONFIRMATION
    row = await conn.fetchrow(query, token_hash)
    if row is None:
        return None
    return ConfirmationRow(link=_link(row), key_id=row["key_id"], key_name=row["name"],
                           key_status=row["status"], purpose=row["purpose"])


async def mark_confirmation_used(conn: asyncpg.Connection, confirmation_id: int) -> bool:
    used = await conn.fetchval(
        "UPDATE key_confirmations SET used_at = now() WHERE id = $1 AND used_at IS NULL"
        " AND superseded_at IS NULL AND expires_at > now() RETURNING id", confirmation_id,
    )
    return used is not None


async def lock_account(conn: asyncpg.Connection, user_id: int) -> None:
    """Hold the user's row until the transaction ends (serialises that user's key creations)."""
    await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)


# --- keys --------------------------------------------------------------------------------


async def count_live_keys(conn: asyncpg.Connection, user_id: int) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM api_keys WHERE user_id = $1 AND status <> 'deleted'", user_id
    )
    return count


async def get_key_owner(conn: asyncpg.Connection, key_id: str) -> tuple[int, str, str] | None:
    """(user_id, status, name) of a key."""
    row = await conn.fetchrow(
        "SELECT user_id, status::text AS status, name FROM api_keys WHERE key_id = $1", key_id
    )
    return None if row is None else (row["user_id"], row["status"], row["name"])


async def key_usage(conn: asyncpg.Connection, key_id: str, hours: int) -> list[UsageRow]:
    """A key's requests per hour and outcome over the last `hours` hours (this one included)."""
    rows = await conn.fetch(
        "SELECT hour, code, requests FROM key_usage_hourly WHERE key_id = $1"
        " AND hour > date_trunc('hour', now()) - make_interval(hours => $2)"
        " ORDER BY hour, code", key_id, hours)
    return [UsageRow(r["hour"], r["code"], r["requests"]) for r in rows]


# --- TOTP --------------------------------------------------------------------------------


async def set_pending_totp(conn: asyncpg.Connection, user_id: int, sealed_secret: str) -> bool:
    """Store a not-yet-enabled secret; False when 2FA got enabled meanwhile."""
    done = await conn.fetchval(
        "UPDATE users SET totp_secret_enc = $2, totp_last_step = NULL"
        " WHERE id = $1 AND NOT totp_enabled RETURNING id", user_id, sealed_secret,
    )
    return done is not None


async def enable_totp(conn: asyncpg.Connection, user_id: int, step: int,
                      recovery_hashes: Sequence[bytes]) -> bool:
    """Turn 2FA on with its first accepted code's step, replacing the recovery codes."""
    async with conn.transaction():
        done = await conn.fetchval(
            "UPDATE users SET totp_enabled = true, totp_last_step = $2"
            " WHERE id = $1 AND NOT totp_enabled AND totp_secret_enc IS NOT NULL RETURNING id",
            user_id, step,
        )
        if done is None:
            return False
        await conn.execute("DELETE FROM totp_recovery_codes WHERE user_id = $1", user_id)
        await conn.executemany(
            "INSERT INTO totp_recovery_codes (user_id, code_hash) VALUES ($1, $2)",
            [(user_id, h) for h in recovery_hashes],
        )
    return True


async def disable_totp(conn: asyncpg.Connection, user_id: int) -> None:
    async with conn.transaction():
        await conn.execute(
            "UPDATE users SET totp_enabled = false, totp_secret_enc = NULL,"
            " totp_last_step = NULL WHERE id = $1", user_id,
        )
        await conn.execute("DELETE FROM totp_recovery_codes WHERE user_id = $1", user_id)


async def accept_totp_step(conn: asyncpg.Connection, user_id: int, step: int) -> bool:
    """Record `step` as used; False when it (or a later one) was used already: a replay."""
    done = await conn.fetchval(
        "UPDATE users SET totp_last_step = $2 WHERE id = $1"
        " AND (totp_last_step IS NULL OR totp_last_step < $2) RETURNING id", user_id, step,
    )
    return done is not None


async def use_recovery_code(conn: asyncpg.Connection, user_id: int, code_hash: bytes) -> bool:
    """Spend a recovery code; False when it is unknown or spent.

    The lookup is by keyed hash, so comparing in SQL leaks nothing about a valid code.
    """
    done = await conn.fetchval(
        "UPDATE totp_recovery_codes SET used_at = now() WHERE id = ("
        " SELECT id FROM totp_recovery_codes WHERE user_id = $1 AND code_hash = $2"
        " AND used_at IS NULL LIMIT 1 FOR UPDATE) RETURNING id", user_id, code_hash,
    )
    return done is not None


async def count_recovery_codes(conn: asyncpg.Connection, user_id: int) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM totp_recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        user_id,
    )
    return count


# --- audit -------------------------------------------------------------------------------


async def list_audit(conn: asyncpg.Connection, user_id: int, limit: int = 200) -> list[AuditRow]:
    rows = await conn.fetch(
        "SELECT at, action, key_id, host(client_ip) AS ip, detail FROM audit_log"
        " WHERE user_id = $1 ORDER BY at DESC, id DESC LIMIT $2", user_id, limit,
    )
    return [
        AuditRow(at=r["at"], action=r["action"], key_id=r["key_id"], client_ip=r["ip"],
                 detail=json.loads(r["detail"]) if isinstance(r["detail"], str) else {})
        for r in rows
    ]


POOL_KEY: web.AppKey[asyncpg.Pool] = web.AppKey("pool")
