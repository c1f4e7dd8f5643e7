"""Secrets of the admin UI: derived keys, TOTP, recovery codes, and the one `login_required`.

Every key is derived from `GATEWAY_SECRET_KEY` with HKDF under its own purpose, so the CSRF
key, the TOTP encryption key and the recovery-code key are independent of one another.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import pyotp
import segno
from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from admin_ui.forms import normalise_code
from admin_ui.sessions import current_user, redirect

__all__ = ["KEYS_KEY",
    "RECOVERY_CODE_COUNT",
    "TOTP_INTERVAL",
    "DerivedKeys",
    "SecretBox",
    "derive_key",
    "format_recovery_code",
    "hash_recovery_code",
    "login_required",
    "match_totp",
    "new_recovery_codes",
    "new_totp_secret",
    "totp_qr_svg",
    "totp_uri",
]

TOTP_INTERVAL = 30
TOTP_DIGITS = 6
RECOVERY_CODE_COUNT = 10
_ISSUER = "Keygate"
_BOX_VERSION = "v1"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def derive_key(secret_key: str, purpose: str) -> bytes:
    """A 256-bit key for one purpose, derived from the configured secret."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"keygate-admin-ui",
                info=f"keygate/{purpose}".encode())
    return hkdf.derive(secret_key.encode())


class SecretBox:
    """AES-GCM encryption of small secrets at rest, bound to the row they belong to."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, context: str) -> str:
        nonce = secrets.token_bytes(12)
        # SECURITY: `context` (e.g. the user id) is authenticated data: a ciphertext copied
        # onto another user's row does not decrypt.
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_BOX_VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"

    def open(self, token: str, context: str) -> str | None:
        """The plaintext, or None when the token is damaged or belongs elsewhere."""
        version, _, body = token.partition(".")
        if version != _BOX_VERSION:
            return None
        try:
            raw = base64.urlsafe_b64decode(body.encode("ascii"))
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (InvalidTag, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class DerivedKeys:
    """The keys the admin UI derives from `GATEWAY_SECRET_KEY`."""

    csrf: bytes
    recovery: bytes
    totp_box: SecretBox

    @classmethod
    def from_secret(cls, secret_key: str) -> DerivedKeys:
        return cls(
            csrf=derive_key(secret_key, "csrf/v1"),
            recovery=derive_key(secret_key, "recovery-codes/v1"),
            totp_box=SecretBox(derive_key(secret_key, "totp-secret/v1")),
        )

    def __repr__(self) -> str:
        return "DerivedKeys(<redacted>)"


# --- TOTP --------------------------------------------------------------------------------


def new_totp_secret() -> str:
    """160 random bits, base32: what authenticator apps expect (RFC 6238)."""
    return pyotp.random_base32(32)


def totp_uri(secret: str, email: str) -> str:
    """The otpauth:// URI the QR code carries."""
    return str(pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=_ISSUER))


def totp_qr_svg(uri: str) -> str:
    """The QR code as an inline SVG element (no image request, works without JavaScript)."""
    qr = segno.make(uri, error="m")
    return str(qr.svg_inline(scale=5, border=2, dark="#111", light="#fff", title=None))


def match_totp(secret: str, code: str, *, last_step: int | None,
               at: float | None = None) -> int | None:
    """The time step `code` belongs to (now, one before or one after), or None.

    A step at or before `last_step` was already used: a replayed code is refused. The caller
    must still record the step atomically (two requests may race with the same code).
    """
    code = normalise_code(code)
    if len(code) != TOTP_DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL)
    current = int((time.time() if at is None else at) // TOTP_INTERVAL)
    matched: int | None = None
    for step in (current - 1, current, current + 1):
        # SECURITY: constant-time compare, and every candidate is checked (no early exit).
        if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()):
            matched = step
    if matched is None or (last_step is not None and matched <= last_step):
        return None
    return matched


# --- recovery codes ----------------------------------------------------------------------


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    """Fresh codes, 50 random bits each, in canonical form (see `format_recovery_code`)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return ["".join(secrets.choice(alphabet) for _ in range(10)) for _ in range(count)]


def format_recovery_code(code: str) -> str:
    """`abcdefghij` -> `abcde-fghij`, easier to copy by hand."""
    return f"{code[:5]}-{code[5:]}"


def hash_recovery_code(key: bytes, code: str) -> bytes:
    """A keyed hash: stored codes cannot be brute-forced offline without the secret key."""
    return hmac.new(key, normalise_code(code).encode(), hashlib.sha256).digest()


# --- access ------------------------------------------------------------------------------


def login_required(handler: _Handler) -> _Handler:
    """Let the handler run only for a logged-in user (both factors); others go to log in."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        if current_user(request) is None:
            # Come back here after logging in (a confirmation link keeps working).
            target = request.path_qs if request.method == "GET" else "/keys"
            return redirect(f"/login?{urlencode({'next': target})}")
        return await handler(request)

    return wrapper


KEYS_KEY: web.AppKey[DerivedKeys] = web.AppKey("derived_keys", DerivedKeys)
