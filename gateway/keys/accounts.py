"""User accounts shared by the ops CLI and the admin UI: creation and password hashing."""

from __future__ import annotations

import re

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "AccountError",
    "create_user",
    "find_user_id",
    "hash_password",
    "normalise_email",
    "verify_password",
]

_hasher = PasswordHasher()
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


async def create_user(conn: asyncpg.Connection, email: str, password: str, *,
                      verified: bool = False) -> int:
    """Insert a user and return its id."""
    address = normalise_email(email)
    try:
        user_id: int = await conn.fetchval(
            "INSERT INTO users (email, password_hash, email_verified) VALUES ($1, $2, $3)"
            " RETURNING id",
            address, hash_password(password), verified,
        )
    except asyncpg.UniqueViolationError as exc:
        raise AccountError(f"a user with email {address} already exists") from exc
    return user_id


async def find_user_id(conn: asyncpg.Connection, email: str) -> int | None:
    user_id: int | None = await conn.fetchval(
        "SELECT id FROM users WHERE lower(email) = lower($1)", email.strip()
    )
    return user_id
