"""User accounts shared by the ops CLI and the admin UI: creation and password hashing.

Argon2 is slow on purpose; code on an event loop hashes and verifies through the `_off_loop`
coroutines, which run it in a small pool of threads of its own, so a burst of sign-ups or
logins queues there instead of stalling every other request.
"""

from __future__ import annotations

import asyncio
import os
import re
from concurrent.futures import ThreadPoolExecutor

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "AccountError",
    "create_user",
    "find_user_id",
    "hash_password",
    "hash_password_off_loop",
    "insert_user",
    "normalise_email",
    "verify_password",
    "verify_password_off_loop",
]

_hasher = PasswordHasher()
# Bounded: each hash holds 64 MiB and all cores' worth of lanes, so more at once only queue.
_HASHING = ThreadPoolExecutor(max_workers=min(4, max(2, os.cpu_count() or 2)),
                              thread_name_prefix="argon2")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD = 10
MAX_PASSWORD = 256


class AccountError(ValueError):
    """A bad email or password, or an email already taken; the message is for the user."""


def normalise_email(email: str) -> str:
    text = email.strip()
    if len(text) > 254 or not _EMAIL.match(text):
        raise AccountError(f"'{email}' is not a valid email address")
    return text


def hash_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(f"a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Constant-time check (argon2); False for any mismatch or malformed hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def hash_password_off_loop(password: str) -> str:
    """`hash_password`, in the hashing threads (the event loop keeps serving)."""
    return await asyncio.get_running_loop().run_in_executor(_HASHING, hash_password, password)


async def verify_password_off_loop(password_hash: str, password: str) -> bool:
    """`verify_password`, in the hashing threads (the event loop keeps serving)."""
    return await asyncio.get_running_loop().run_in_executor(
        _HASHING, verify_password, password_hash, password)


async def create_user(conn: asyncpg.Connection, email: str, password: str, *,
                      verified: bool = False) -> int:
    """Insert a user and return its id."""
    address = normalise_email(email)
    return await insert_user(conn, address, await hash_password_off_loop(password),
                             verified=verified)


async def insert_user(conn: asyncpg.Connection, email: str, password_hash: str, *,
                      verified: bool = False) -> int:
    """Insert a user whose password is already hashed; `AccountError` if the email is taken."""
    address = normalise_email(email)
    try:
        user_id: int = await conn.fetchval(
            "INSERT INTO users (email, password_hash, email_verified) VALUES ($1, $2, $3)"
            " RETURNING id",
            address, password_hash, verified,
        )
    except asyncpg.UniqueViolationError as exc:
        raise AccountError(f"a user with email {address} already exists") from exc
    return user_id


async def find_user_id(conn: asyncpg.Connection, email: str) -> int | None:
    user_id: int | None = await conn.fetchval(
        "SELECT id FROM users WHERE lower(email) = lower($1)", email.strip()
    )
    return user_id
