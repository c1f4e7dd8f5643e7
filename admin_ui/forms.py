"""Form validation: pure functions from submitted fields to values or per-field messages.

No I/O here, so every rule is unit-tested directly. Messages are for the user: they say
what is wrong and what to do.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.config.routes import KeyPolicy
from gateway.http.client_ip import IpAddress
from gateway.keys.accounts import MAX_PASSWORD, MIN_PASSWORD, AccountError, normalise_email
from gateway.keys.addresses import AddressError, parse_addresses
from gateway.keys.allowlist import MAX_ALLOWED_IPS, AllowlistError, parse_allowlist, split_ips
from gateway.keys.policy import LIFETIME_FIELD, policy_problems

__all__ = [
    "MAX_EXPIRY_DAYS",
    "MAX_KEY_NAME",
    "MAX_OVERLAP_HOURS",
    "AddressRequest",
    "Credentials",
    "Fields",
    "FormErrors",
    "KeyRequest",
    "RollRequest",
    "is_recovery_code_shape",
    "is_totp_shape",
    "normalise_code",
    "safe_next",
    "validate_address_form",
    "validate_credentials",
    "validate_key_form",
    "validate_new_password",
    "validate_roll_form",
]

MAX_KEY_NAME = 64
MAX_EXPIRY_DAYS = 3650
MAX_OVERLAP_HOURS = 720
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
    lifetime: float | None = None  # seconds; None: never expires
    withdraw_addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RollRequest:
    """A valid roll: how long the old key keeps working once the new one is confirmed."""

    overlap_hours: float
    totp: str | None


@dataclass(frozen=True, slots=True)
class AddressRequest:
    """Withdrawal addresses to add to a live key."""

    addresses: tuple[str, ...]
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


def _totp(fields: Fields, needs_totp: bool, errors: FormErrors) -> str | None:
    if not needs_totp:
        return None
    code = normalise_code(_first(fields, "totp"))
    if not _TOTP.fullmatch(code):
        errors["totp"] = "Enter the 6-digit code from your authenticator app."
        return None
    return code


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + "."


def validate_key_form(
    fields: Fields, known_permissions: Sequence[str], *, needs_totp: bool,
    require_ip_allowlist: frozenset[str] = frozenset(),
    policy: KeyPolicy | None = None,
) -> tuple[KeyRequest | None, FormErrors]:
    """Name, permissions (checkbox values), IPs (repeated and/or separated), expiry in days
    (`expires_in_days`, empty for never), withdrawal addresses (one per line), 2FA code; and
    the key policy (`policy`, or only its allowlist rule as `require_ip_allowlist`)."""
    errors: FormErrors = {}
    if policy is None:
        policy = KeyPolicy(require_ip_allowlist=require_ip_allowlist)

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
            errors["ips"] = _sentence(str(exc))

    lifetime: float | None = None
    days_text = _first(fields, "expires_in_days").strip()
    if days_text:
        if not days_text.isdigit() or not 1 <= int(days_text) <= MAX_EXPIRY_DAYS:
            errors["expires_in_days"] = (f"Enter a whole number of days from 1 to "
                                         f"{MAX_EXPIRY_DAYS}, or leave it empty for a key "
                                         "that does not expire.")
        else:
            lifetime = int(days_text) * 86400.0

    addresses: tuple[str, ...] = ()
    try:
        addresses = parse_addresses(fields.get("withdraw_addresses") or ())
    except AddressError as exc:
        errors["withdraw_addresses"] = _sentence(str(exc))

    problems = policy_problems(policy, permissions=permissions, has_ips=bool(ips),
                               lifetime=lifetime)
    if "ips" in problems and "ips" not in errors:
        errors["ips"] = problems["ips"]
    if LIFETIME_FIELD in problems and "expires_in_days" not in errors:
        errors["expires_in_days"] = problems[LIFETIME_FIELD]

    totp = _totp(fields, needs_totp, errors)
    if errors:
        return None, errors
    return KeyRequest(name, permissions, ips, totp, lifetime, addresses), {}


def validate_roll_form(fields: Fields, *,
                       needs_totp: bool) -> tuple[RollRequest | None, FormErrors]:
    """`overlap_hours` (0 to 720, decimals allowed) and the 2FA code."""
    errors: FormErrors = {}
    text = _first(fields, "overlap_hours").strip()
    overlap = -1.0
    try:
        overlap = float(text)
    except ValueError:
        pass
    if not text or not 0 <= overlap <= MAX_OVERLAP_HOURS or overlap != overlap:
        errors["overlap_hours"] = (f"Enter how many hours the old key keeps working, from 0 "
                                   f"to {MAX_OVERLAP_HOURS}.")
    totp = _totp(fields, needs_totp, errors)
    if errors:
        return None, errors
    return RollRequest(overlap, totp), {}


def validate_address_form(fields: Fields, *, needs_totp: bool, already: Sequence[str] = ()
                          ) -> tuple[AddressRequest | None, FormErrors]:
    """`withdraw_addresses` (one per line; at least one new) and the 2FA code."""
    errors: FormErrors = {}
    addresses: tuple[str, ...] = ()
    try:
        addresses = parse_addresses(fields.get("withdraw_addresses") or (), already=already)
    except AddressError as exc:
        errors["withdraw_addresses"] = _sentence(str(exc))
    else:
        if not addresses:
            errors["withdraw_addresses"] = ("Enter at least one address this key does not "
                                            "have yet, one per line.")
    totp = _totp(fields, needs_totp, errors)
    if errors:
        return None, errors
    return AddressRequest(addresses, totp), {}


def safe_next(value: str | None, default: str = "/keys") -> str:
    """A local path to go back to after login; anything else (another site) gives `default`."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return default
    # SECURITY: no scheme, no backslash, no control characters: nothing a browser could read
    # as another origin (an open redirect).
    if "\\" in value or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in value):
        return default
    return value
