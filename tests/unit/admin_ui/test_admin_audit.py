"""admin_ui.views.audit: a sentence for every action the audit log records, and the reason for
every refusal the gateway audits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from admin_ui.views.audit import ACTIONS, DENIAL_REASONS, describe_event
from gateway.http import errors
from gateway.observability.accesslog import AUDITED_CODES

ROOT = Path(__file__).resolve().parents[3]
# `audit(conn, "action", ...)` calls, and the gateway's own INSERT of denials.
_CALL = re.compile(r"""\baudit\(\s*conn,\s*["']([a-z0-9_.]+)["']""")
_SQL = re.compile(r"""'(request\.[a-z_]+)'""")


def _recorded_actions() -> set[str]:
    found: set[str] = set()
    for package in ("gateway", "admin_ui"):
        for source in (ROOT / package).rglob("*.py"):
            text = source.read_text()
            found |= set(_CALL.findall(text)) | set(_SQL.findall(text))
    return found


def test_every_recorded_action_has_a_sentence() -> None:
    recorded = _recorded_actions()
    assert {"signup", "login", "key.deleted", "request.denied"} <= recorded  # the scan works
    assert recorded - set(ACTIONS) == set()


def test_every_audited_code_and_every_error_code_has_a_reason() -> None:
    codes = {cls.code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.GatewayError)}
    assert AUDITED_CODES <= set(DENIAL_REASONS)
    assert codes - set(DENIAL_REASONS) == set()


def test_a_refusal_names_method_path_code_and_reason() -> None:
    detail = {"code": "INVALID_IP_RESTRICTION", "status": 403, "method": "GET",
              "path": "/public/v1/account/balances", "route": "/public/v1/account/balances"}
    assert describe_event("request.denied", detail) == (
        "Refused GET /public/v1/account/balances: INVALID_IP_RESTRICTION (client IP not allowed)")
    assert describe_event("request.denied", {"code": "SOMETHING_NEW"}) == \
        "Refused a request: SOMETHING_NEW"


@pytest.mark.parametrize(("action", "detail", "sentence"), [
    ("login", {}, "Logged in with password"),
    ("login", {"second_factor": "totp"}, "Logged in with password and authenticator code"),
    ("login", {"second_factor": "recovery"}, "Logged in with password and a recovery code"),
    ("key.created", {"name": "bot", "permissions": ["read", "trade"], "ips": []},
     "Key created (pending confirmation): \u201cbot\u201d, permissions read, trade; "
     "any IP address"),
    ("2fa.failed", {"during": "enable"},
     "Wrong two-factor code while turning two-factor authentication on"),
    ("2fa.recovery_code_used", {"remaining": 8}, "Recovery code used (8 left)"),
    ("key.renamed", {}, "Event key.renamed"),  # an action this UI does not know yet
    ("key.rolled", {"old_key_id": "a" * 16, "new_key_id": "b" * 16,
                    "old_expires_at": "2030-01-02T03:04:05.123+00:00"},
     f"Key rolled: replaced by {'b' * 16}; it works until 2030-01-02 03:04 UTC"),
    ("key.addresses_added", {"withdraw_addresses": ["bc1q", "0xab"],
                             "usable_from": "2030-01-02T03:04:05+00:00"},
     "Withdrawal addresses confirmed: bc1q, 0xab; usable from 2030-01-02 03:04 UTC"),
    ("key.addresses_requested", {"withdraw_addresses": ["bc1q"]},
     "Withdrawal addresses requested (pending confirmation): bc1q"),
])
def test_sentences(action: str, detail: dict[str, object], sentence: str) -> None:
    assert describe_event(action, detail) == sentence
