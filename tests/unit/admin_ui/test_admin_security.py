"""admin_ui.security: derived keys, sealed TOTP secrets, the TOTP window and replay rule,
recovery codes."""

from __future__ import annotations

import time

import pyotp

from admin_ui.security import (
    DerivedKeys,
    SecretBox,
    derive_key,
    format_recovery_code,
    hash_recovery_code,
    match_totp,
    new_recovery_codes,
    new_totp_secret,
    totp_qr_svg,
    totp_uri,
)


def test_keys_are_derived_per_purpose() -> None:
    assert derive_key("secret", "a") == derive_key("secret", "a")
    assert derive_key("secret", "a") != derive_key("secret", "b")
    assert derive_key("secret", "a") != derive_key("other", "a")
    keys = DerivedKeys.from_secret("secret")
    assert keys.csrf != keys.recovery
    assert "secret" not in repr(keys)


def test_secret_box() -> None:
    box = SecretBox(derive_key("secret", "totp"))
    sealed = box.seal("JBSWY3DPEHPK3PXP", "user:1")
    assert "JBSWY3DPEHPK3PXP" not in sealed
    assert sealed != box.seal("JBSWY3DPEHPK3PXP", "user:1")  # a fresh nonce each time
    assert box.open(sealed, "user:1") == "JBSWY3DPEHPK3PXP"
    assert box.open(sealed, "user:2") is None  # moved to another row
    assert SecretBox(derive_key("other", "totp")).open(sealed, "user:1") is None
    assert box.open(sealed[:-4] + "AAAA", "user:1") is None
    assert box.open("v0.garbage", "user:1") is None
    assert box.open("v1.%%%", "user:1") is None


def test_totp_window_and_replay() -> None:
    secret = new_totp_secret()
    totp = pyotp.TOTP(secret)
    now = 1_700_000_000.0
    step = int(now // 30)
    assert match_totp(secret, totp.at(now), last_step=None, at=now) == step
    assert match_totp(secret, totp.at(now - 30), last_step=None, at=now) == step - 1
    assert match_totp(secret, totp.at(now + 30), last_step=None, at=now) == step + 1
    assert match_totp(secret, totp.at(now - 60), last_step=None, at=now) is None
    assert match_totp(secret, totp.at(now + 60), last_step=None, at=now) is None
    # A step at or before the last accepted one is a replay.
    assert match_totp(secret, totp.at(now), last_step=step, at=now) is None
    assert match_totp(secret, totp.at(now - 30), last_step=step - 1, at=now) is None
    assert match_totp(secret, totp.at(now + 30), last_step=step, at=now) == step + 1
    assert match_totp(secret, "12345", last_step=None, at=now) is None
    assert match_totp(secret, "abcdef", last_step=None, at=now) is None
    code = totp.at(time.time())
    assert match_totp(secret, f"{code[:3]} {code[3:]}", last_step=None) is not None


def test_recovery_codes() -> None:
    codes = new_recovery_codes()
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(len(c) == 10 for c in codes)
    key = derive_key("secret", "recovery")
    shown = format_recovery_code(codes[0])
    assert shown[5] == "-"
    # Typed with the dash, in capitals, with spaces: the same code.
    assert hash_recovery_code(key, shown.upper()) == hash_recovery_code(key, codes[0])
    assert hash_recovery_code(key, codes[0]) != hash_recovery_code(derive_key("x", "r"), codes[0])


def test_qr_code_is_inline_svg() -> None:
    uri = totp_uri("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "a@example.com")
    assert uri.startswith("otpauth://totp/Keygate:a%40example.com?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
    svg = totp_qr_svg(uri)
    assert svg.startswith("<svg") and "<script" not in svg and "style=" not in svg
