"""API key tokens: generation, offline parsing, and the keyed hash that is all we store.

A token reads `kg_<key id>_<secret><checksum>`:

* `kg_`: a fixed prefix, so a leaked token is recognisable (secret scanners, logs);
* key id: 16 base32 characters (80 random bits), public, the database key;
* secret: 52 base32 characters (256 random bits), never stored;
* checksum: 7 base32 characters of CRC-32 over everything before it, so a mistyped or
  truncated token is refused without touching Redis or PostgreSQL.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import zlib
from collections.abc import Mapping
from typing import NamedTuple

__all__ = [
    "TOKEN_PREFIX",
    "ParsedToken",
    "generate_key_id",
    "generate_token",
    "hash_secret",
    "is_key_id",
    "parse_token",
    "verify_secret",
]

TOKEN_PREFIX = "kg_"  # noqa: S105 (a prefix, not a secret)
_ID_BYTES = 10
_SECRET_BYTES = 32
_TOKEN_RE = re.compile(r"kg_([a-z2-7]{16})_([a-z2-7]{52})([a-z2-7]{7})")
_KEY_ID_RE = re.compile(r"[a-z2-7]{16}")


class ParsedToken(NamedTuple):  # a tuple: immutable, and cheaper to make than a dataclass
    key_id: str
    secret: str

    def __repr__(self) -> str:
        # SECURITY: a token must never reach a log line through a repr.
        return f"ParsedToken(key_id={self.key_id!r}, secret=<redacted>)"


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_B32_PAIRS = tuple(a + b for a in _B32 for b in _B32)  # 10 bits -> two digits


def _checksum(body: str) -> str:
    """`_b32` of the CRC-32, by table: base64's b32encode is pure Python (3.11)."""
    n = zlib.crc32(body.encode("ascii")) << 3  # 32 bits padded to 35: seven 5-bit digits
    return (_B32_PAIRS[(n >> 25) & 1023] + _B32_PAIRS[(n >> 15) & 1023]
            + _B32_PAIRS[(n >> 5) & 1023] + _B32[n & 31])


def generate_key_id() -> str:
    """A new public key id."""
    return _b32(secrets.token_bytes(_ID_BYTES))


def is_key_id(value: str) -> bool:
    """True when `value` has the shape of a key id."""
    return _KEY_ID_RE.fullmatch(value) is not None


def generate_token(key_id: str) -> tuple[str, str]:
    """A fresh token for `key_id`; returns `(token, secret)`. Show the token once, store neither."""
    secret = _b32(secrets.token_bytes(_SECRET_BYTES))
    body = f"{TOKEN_PREFIX}{key_id}_{secret}"
    return body + _checksum(body), secret


def parse_token(token: str) -> ParsedToken | None:
    """Split a token, or None when it is malformed or its checksum is wrong. No I/O."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return None
    key_id, secret, checksum = match.groups()
    # A checksum is not a secret: a plain compare is fine here.
    if _checksum(token[: -len(checksum)]) != checksum:
        return None
    return ParsedToken(key_id, secret)


_BLOCK = 64  # SHA-256's block size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


@functools.lru_cache(maxsize=16)
def _keyed_states(pepper: str) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC's inner and outer hash states with the key absorbed (RFC 2104's precomputation).

    Copying them costs half of keying a new HMAC per call, on every request.
    """
    key = pepper.encode()
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


def hash_secret(secret: str, pepper: str) -> bytes:
    """HMAC-SHA256 of the secret keyed by the pepper: what PostgreSQL keeps."""
    inner_state, outer_state = _keyed_states(pepper)
    inner = inner_state.copy()
    inner.update(secret.encode("ascii"))
    outer = outer_state.copy()
    outer.update(inner.digest())
    return outer.digest()


def verify_secret(
    secret: str, stored: bytes, hash_version: int, peppers: Mapping[int, str]
) -> bool:
    """Constant-time check of a secret against its stored hash and hash version."""
    pepper = peppers.get(hash_version)
    if pepper is None:
        return False
    # SECURITY: constant-time compare, so timing tells nothing about the stored hash.
    return hmac.compare_digest(hash_secret(secret, pepper), stored)
