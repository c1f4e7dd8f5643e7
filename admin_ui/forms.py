"""Form validation: pure functions from submitted fields to values or per-field messages.

No I/O here, so every rule is unit-tested directly. Messages are for the user: they say
what is wrong and what to do.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.http.client_ip import IpAddress
from gateway.keys.accounts import MAX_PASSWORD, MIN_PASSWORD, AccountError, normalise_email
from gateway.keys.allowlist import MAX_ALLOWED_IPS, AllowlistError, parse_allowlist, split_ips

__all__ = [
    "MAX_KEY_NAME",
    "Credentials",
    "Fields",
    "FormErrors",
    "KeyRequest",
    "is_recovery_code_shape",
    "is_totp_shape",
    "normalise_code",
    "safe_next",
    "validate_credentials",
    "validate_key_form",
    "validate_new_password",
]

MAX_KEY_NAME = 64
Fields = Mapping[str, Sequence[str]]
FormErrors = dict[str, str]

_TOTP = re.compile(r"\d{6}")
_RECOVERY = re.compile(r"[a-z2-7]{10}")


@dataclass(frozen=True, slots=True)
class Credentials:
    email: str
    password: str

    def __repr__(self) -> str:
        # SECURITY: a password must never reach a log line through a repr.
        return f"Credentials(email={self.email!r}, password=<redacted>)"


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """A valid key creation request."""

    name: str
    permissions: tuple[str, ...]
    ips: tuple[IpAddress, ...]
    totp: str | None


def _first(fields: Fields, name: str) -> str:
    values = fields.get(name) or ()
    return values[0] if values else ""


def normalise_code(value: str) -> str:
    """A code as typed ("123 456", "abcde-fghij") in canonical form."""
    return re.sub(r"[\s-]+", "", value).lower()


def is_totp_shape(value: str) -> bool:
    return _TOTP.fullmatch(normalise_code(value)) is not None


def is_recovery_code_shape(value: str) -> bool:
    return _RECOVERY.fullmatch(normalise_code(value)) is not None


def validate_credentials(fields: Fields, *, is_new: bool) -> tuple[Credentials | None, FormErrors]:
    """Email and password; a new account's password must also meet the length rule."""
    errors: FormErrors = {}
    email = _first(fields, "email").strip()
    password = _first(fields, "password")
    try:
        email = normalise_email(email)
    except AccountError:
        errors["email"] = "Enter a valid email address, like name@example.com."
    if is_new:
        errors.update(_password_errors(password))
    elif not password:
        errors["password"] = "Enter your password."  # noqa: S105 (a message)
    elif len(password) > MAX_PASSWORD:
        errors["password"] = "That password is too long."  # noqa: S105 (a message)
    if errors:
        return None, errors
    return Credentials(email, password), {}


def _password_errors(password: str) -> FormErrors:
    if len(password) < MIN_PASSWORD:
        return {"password": f"Choose a password of at least {MIN_PASSWORD} characters."}
    if len(password) > MAX_PASSWORD:
        return {"password": f"A password has at most {MAX_PASSWORD} characters."}
    return {}


def validate_new_password(fields: Fields) -> tuple[str | None, FormErrors]:
    """The `password` field of the reset form."""
    password = _first(fields, "password")
    errors = _password_errors(password)
    return (None, errors) if errors else (password, {})


def validate_key_form(
    fields: Fields, known_permissions: Sequence[str], *, needs_totp: bool,
    require_ip_allowlist: frozenset[str] = frozenset(),
) -> tuple[KeyRequest | None, FormErrors]:
    """Name, permissions (checkbox values), IPs (repeated and/or separated), 2FA code."""
    errors: FormErrors = {}

    name = _first(fields, "name").strip()
    if not name:
        errors["name"] = "Give the key a name, so you can tell it apart from your other keys."
    elif len(name) > MAX_KEY_NAME:
        errors["name"] = f"A key name has at most {MAX_KEY_NAME} characters ({len(name)} given)."
    elif any(unicodedata.category(ch).startswith("C") for ch in name):
        errors["name"] = "A key name cannot contain control characters."

    chosen = [p for p in fields.get("permissions") or () if p]
    unknown = sorted({p for p in chosen if p not in known_permissions})
    if unknown:
        errors["permissions"] = f"Unknown permission: {', '.join(unknown)}."
    elif not chosen:
        errors["permissions"] = "Choose at least one permission."
    permissions = tuple(p for p in known_permissions if p in chosen)

    ips: tuple[IpAddress, ...] = ()
    raw_ips = list(fields.get("ips") or ())
    distinct = list(dict.fromkeys(split_ips(raw_ips)))
    if len(distinct) > MAX_ALLOWED_IPS:
        errors["ips"] = (f"A key allows at most {MAX_ALLOWED_IPS} IP addresses; you entered "
                         f"{len(distinct)}. Remove {len(distinct) - MAX_ALLOWED_IPS}.")
    else:
        try:
            ips = parse_allowlist(raw_ips)
        except AllowlistError as exc:
            message = str(exc)
            errors["ips"] = message[:1].upper() + message[1:] + "."

    needing_ips = sorted(set(permissions) & require_ip_allowlist)
    if needing_ips and not ips and "ips" not in errors:
        errors["ips"] = (f"A key with the {', '.join(needing_ips)} permission needs at least "
                         "one IP address.")

    totp: str | None = None
    if needs_totp:
        code = normalise_code(_first(fields, "totp"))
        if not _TOTP.fullmatch(code):
            errors["totp"] = "Enter the 6-digit code from your authenticator app."
        else:
            totp = code

    if errors:
        return None, errors
    return KeyRequest(name, permissions, ips, totp), {}


def safe_next(value: str | None, default: str = "/keys") -> str:
    """A local path to go back to after login; anything else (another site) gives `default`."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return default
    # SECURITY: no scheme, no backslash, no control characters: nothing a browser could read
    # as another origin (an open redirect).
    if "\\" in value or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in value):
        return default
    return value
