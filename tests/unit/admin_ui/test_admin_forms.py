"""admin_ui.forms: every rule of the sign-up, login, reset and key forms, without I/O."""

from __future__ import annotations

import ipaddress

import pytest

from admin_ui.forms import (
    is_recovery_code_shape,
    is_totp_shape,
    normalise_code,
    safe_next,
    validate_credentials,
    validate_key_form,
    validate_new_password,
)

KNOWN = ("read", "trade", "withdraw", "staking")


def key_form(**fields: list[str]) -> dict[str, list[str]]:
    base = {"name": ["bot"], "permissions": ["read"], "ips": [""]}
    base.update(fields)
    return base


def test_valid_key_form() -> None:
    wanted, errors = validate_key_form(
        key_form(name=["  my bot "], permissions=["trade", "read"],
                 ips=["192.0.2.1, 2001:db8::1", "192.0.2.2\n192.0.2.1"]),
        KNOWN, needs_totp=False)
    assert errors == {}
    assert wanted is not None
    assert wanted.name == "my bot"
    assert wanted.permissions == ("read", "trade")  # in the config's order
    assert wanted.ips == (ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("2001:db8::1"),
                          ipaddress.ip_address("192.0.2.2"))
    assert wanted.totp is None


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"name": [""]}, "name", "Give the key a name"),
    ({"name": ["   "]}, "name", "Give the key a name"),
    ({"name": ["x" * 65]}, "name", "at most 64 characters (65 given)"),
    ({"name": ["tab\there"]}, "name", "control characters"),
    ({"permissions": []}, "permissions", "Choose at least one permission."),
    ({"permissions": ["read", "admin"]}, "permissions", "Unknown permission: admin."),
    ({"ips": ["192.0.2.300"]}, "ips", "'192.0.2.300' is not a valid IPv4 or IPv6 address."),
    ({"ips": ["10.0.0.0/8"]}, "ips", "not a valid IPv4 or IPv6 address"),
    ({"ips": [", ".join(f"192.0.2.{i}" for i in range(1, 7))]}, "ips",
     "A key allows at most 5 IP addresses; you entered 6. Remove 1."),
    ({"ips": [f"192.0.2.{i}" for i in range(1, 8)]}, "ips", "you entered 7. Remove 2."),
])
def test_key_form_errors(fields: dict[str, list[str]], field: str, message: str) -> None:
    wanted, errors = validate_key_form(key_form(**fields), KNOWN, needs_totp=False)
    assert wanted is None
    assert message in errors[field]


def test_sixty_four_characters_and_duplicates_are_fine() -> None:
    wanted, errors = validate_key_form(
        key_form(name=["x" * 64], ips=["192.0.2.1"] * 6), KNOWN, needs_totp=False)
    assert errors == {} and wanted is not None and len(wanted.ips) == 1


def test_a_name_with_markup_is_just_text() -> None:
    wanted, _ = validate_key_form(key_form(name=["<script>alert(1)</script>"]), KNOWN,
                                  needs_totp=False)
    assert wanted is not None and wanted.name == "<script>alert(1)</script>"


def test_totp_is_required_when_2fa_is_on() -> None:
    _, errors = validate_key_form(key_form(), KNOWN, needs_totp=True)
    assert "6-digit code" in errors["totp"]
    _, errors = validate_key_form(key_form(totp=["12345"]), KNOWN, needs_totp=True)
    assert "totp" in errors
    wanted, errors = validate_key_form(key_form(totp=["123 456"]), KNOWN, needs_totp=True)
    assert errors == {} and wanted is not None and wanted.totp == "123456"


def test_policy_can_require_an_allowlist() -> None:
    _, errors = validate_key_form(key_form(permissions=["withdraw"]), KNOWN, needs_totp=False,
                                  require_ip_allowlist=frozenset({"withdraw"}))
    assert "needs at least one IP address" in errors["ips"]
    wanted, _ = validate_key_form(key_form(permissions=["withdraw"], ips=["192.0.2.9"]), KNOWN,
                                  needs_totp=False, require_ip_allowlist=frozenset({"withdraw"}))
    assert wanted is not None


def test_credentials() -> None:
    creds, errors = validate_credentials({"email": [" a@example.com "], "password": ["x" * 10]},
                                         is_new=True)
    assert errors == {} and creds is not None and creds.email == "a@example.com"
    assert "x" * 10 not in repr(creds)
    _, errors = validate_credentials({"email": ["nope"], "password": ["short"]}, is_new=True)
    assert set(errors) == {"email", "password"}
    # An existing account's password is not held to the new-password rule.
    creds, errors = validate_credentials({"email": ["a@example.com"], "password": ["short"]},
                                         is_new=False)
    assert errors == {} and creds is not None
    _, errors = validate_credentials({"email": ["a@example.com"], "password": [""]},
                                     is_new=False)
    assert errors == {"password": "Enter your password."}


def test_new_password() -> None:
    assert validate_new_password({"password": ["long enough!"]}) == ("long enough!", {})
    password, errors = validate_new_password({"password": ["short"]})
    assert password is None and "at least 10" in errors["password"]


def test_code_shapes() -> None:
    assert normalise_code(" 123 456 ") == "123456"
    assert normalise_code("ABCDE-FGHIJ") == "abcdefghij"
    assert is_totp_shape("123 456") and not is_totp_shape("12345a")
    assert is_recovery_code_shape("abcde-fgh23") and not is_recovery_code_shape("123456")


@pytest.mark.parametrize(("value", "expected"), [
    (None, "/keys"),
    ("", "/keys"),
    ("/keys/confirm/abc", "/keys/confirm/abc"),
    ("/audit?x=1", "/audit?x=1"),
    ("//evil.example/", "/keys"),
    ("https://evil.example/", "/keys"),
    ("/\\evil.example", "/keys"),
    ("/ok\nLocation: x", "/keys"),
    ("keys", "/keys"),
])
def test_safe_next(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected
