"""The user's own activity: what happened to the account, in sentences, with time and address.

Every action the audit log records has a sentence here, built from the row's detail: a
request the gateway refused reads "Refused GET /public/v1/account/balances:
INVALID_IP_RESTRICTION (client IP not allowed)".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from admin_ui import db
from admin_ui.db import POOL_KEY
from admin_ui.render import render
from admin_ui.security import login_required
from admin_ui.sessions import current_user

__all__ = ["ACTIONS", "DENIAL_REASONS", "audit_page", "describe_event"]

Detail = Mapping[str, Any]

# The gateway's error codes, as a user reads them.
DENIAL_REASONS: Mapping[str, str] = {
    "INVALID_APIKEY": "key unknown, unconfirmed or deleted",
    "APIKEY_EXPIRED": "key expired",
    "INVALID_IP_RESTRICTION": "client IP not allowed",
    "MISSING_PERMISSION": "the key lacks the route's permission",
    "CLIENT_IP_BLOCKED": "client IP blocked after repeated failed authentications",
    "MISSING_CREDENTIALS": "no key sent",
    "RATELIMIT": "rate limit reached",
    "ROUTE_NOT_FOUND": "no such route",
    "ILLEGAL_CHARS": "request refused as ambiguous or malformed",
    "PAYLOAD_TOO_LARGE": "body too large",
    "HEADERS_TOO_LARGE": "headers too large",
    "REQUEST_TIMEOUT": "request too slow to arrive",
    "SERVICE_UNAVAILABLE": "upstream or key store unavailable",
    "GATEWAY_TIMEOUT": "upstream too slow",
    "INTERNAL_SERVER_ERROR": "gateway error",
}

_SECOND_FACTORS = {"totp": " and authenticator code", "recovery": " and a recovery code"}


def _refused(detail: Detail) -> str:
    code = str(detail.get("code") or "refused")
    method, path = detail.get("method"), detail.get("path")
    what = f"{method} {path}" if method and path else "a request"
    reason = DENIAL_REASONS.get(code)
    return f"Refused {what}: {code}" + (f" ({reason})" if reason else "")


def _login(detail: Detail) -> str:
    return "Logged in with password" + _SECOND_FACTORS.get(str(detail.get("second_factor")),
                                                           "")


def _key_created(detail: Detail) -> str:
    name = detail.get("name")
    permissions = ", ".join(str(p) for p in detail.get("permissions") or ()) or "none"
    ips = ", ".join(str(ip) for ip in detail.get("ips") or ())
    return ("Key created (pending confirmation): "
            + (f"\u201c{name}\u201d, " if name else "")
            + f"permissions {permissions}; "
            + (f"IP addresses {ips}" if ips else "any IP address"))


def _code_failed(detail: Detail) -> str:
    during = " while turning two-factor authentication on" if detail.get("during") == "enable" \
        else ""
    return "Wrong two-factor code" + during


def _recovery_used(detail: Detail) -> str:
    remaining = detail.get("remaining")
    return "Recovery code used" + (f" ({remaining} left)" if remaining is not None else "")


def _key_rolled(detail: Detail) -> str:
    ends = str(detail.get("old_expires_at") or "")
    return (f"Key rolled: replaced by {detail.get('new_key_id')}"
            + (f"; it works until {ends[:16].replace('T', ' ')} UTC" if ends else ""))


def _addresses(done: bool) -> Callable[[Detail], str]:
    def sentence(detail: Detail) -> str:
        listed = ", ".join(str(a) for a in detail.get("withdraw_addresses") or ())
        if done:
            usable = str(detail.get("usable_from") or "")[:16].replace("T", " ")
            return (f"Withdrawal addresses confirmed: {listed}"
                    + (f"; usable from {usable} UTC" if usable else ""))
        return f"Withdrawal addresses requested (pending confirmation): {listed}"
    return sentence


def _fixed(sentence: str) -> Callable[[Detail], str]:
    return lambda _detail: sentence


# Every action the audit log records, with its sentence.
ACTIONS: Mapping[str, Callable[[Detail], str]] = {
    "signup": _fixed("Signed up"),
    "signup.existing": _fixed("Someone tried to sign up with your address; nothing was "
                              "changed"),
    "email.verified": _fixed("Email address confirmed"),
    "login": _login,
    "login.failed": _fixed("Failed login: wrong password"),
    "logout": _fixed("Logged out"),
    "2fa.enabled": _fixed("Two-factor authentication turned on"),
    "2fa.disabled": _fixed("Two-factor authentication turned off"),
    "2fa.failed": _code_failed,
    "2fa.recovery_code_used": _recovery_used,
    "password.reset_requested": _fixed("Password reset requested"),
    "password.reset": _fixed("Password changed with a reset link; every session logged out"),
    "key.created": _key_created,
    "key.link_resent": _fixed("Confirmation link sent again"),
    "key.confirmed": _fixed("Key confirmed and shown once"),
    "key.deleted": _fixed("Key deleted"),
    "key.roll_requested": _fixed("Key roll requested (the new key waits for confirmation)"),
    "key.rolled": _key_rolled,
    "key.addresses_requested": _addresses(done=False),
    "key.addresses_added": _addresses(done=True),
    "request.denied": _refused,
}


def describe_event(action: str, detail: Detail) -> str:
    """The sentence for one audit row; an action this UI does not know yet is named as is."""
    sentence = ACTIONS.get(action)
    return sentence(detail) if sentence is not None else f"Event {action}"


@login_required
async def audit_page(request: web.Request) -> web.Response:
    account = current_user(request)
    assert account is not None
    async with request.app[POOL_KEY].acquire() as conn:
        events = await db.list_audit(conn, account.id)
    return render(request, "audit.html", {"events": events, "describe": describe_event})
