"""Single-use link tokens (key confirmation, email verification, password reset).

A link carries 256 random bits; only their SHA-256 is stored, so a database leak yields no
usable link. A fast hash is enough here: the token is random, not a password. What a stored
link row means for the user is decided here, without I/O, so every state gets its own page.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from datetime import datetime

__all__ = ["LinkState", "hash_link_token", "is_link_token", "link_state", "new_link_token"]

_TOKEN_BYTES = 32
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


class LinkState(enum.Enum):
    """Why a link works or does not."""

    VALID = "valid"
    UNKNOWN = "unknown"
    USED = "used"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"


def new_link_token() -> tuple[str, bytes]:
    """A fresh `(token, stored_hash)`: the token goes in the email, the hash in PostgreSQL."""
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    return token, hash_link_token(token)


def is_link_token(value: str) -> bool:
    """True when `value` has a token's shape (checked before any lookup)."""
    return _TOKEN_RE.fullmatch(value) is not None


def hash_link_token(token: str) -> bytes:
    """What is stored for a token; lookups go by this hash, so no compare touches a secret."""
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def link_state(
    *,
    used_at: datetime | None,
    superseded_at: datetime | None,
    expires_at: datetime,
    now: datetime,
) -> LinkState:
    """The state of a stored link. Used wins over superseded, which wins over expired:

    the user is told the most useful thing first (the key was already shown; a newer email
    exists; the link is simply too old).
    """
    if used_at is not None:
        return LinkState.USED
    if superseded_at is not None:
        return LinkState.SUPERSEDED
    if now >= expires_at:
        return LinkState.EXPIRED
    return LinkState.VALID
