"""The user's own activity: logins, failed codes, key events, with time and address."""

from __future__ import annotations

from aiohttp import web

from admin_ui import db
from admin_ui.db import POOL_KEY
from admin_ui.render import render
from admin_ui.security import login_required
from admin_ui.sessions import current_user

__all__ = ["ACTION_LABELS", "audit_page"]

ACTION_LABELS = {
    "signup": "Signed up",
    "email.verified": "Email address confirmed",
    "login": "Logged in",
    "login.failed": "Failed login (wrong password)",
    "logout": "Logged out",
    "2fa.enabled": "Two-factor authentication turned on",
    "2fa.disabled": "Two-factor authentication turned off",
    "2fa.failed": "Wrong two-factor code",
    "2fa.recovery_code_used": "Recovery code used",
    "password.reset_requested": "Password reset requested",
    "password.reset": "Password changed",
    "key.created": "Key created (pending confirmation)",
    "key.link_resent": "Confirmation link sent again",
    "key.confirmed": "Key confirmed and shown",
    "key.deleted": "Key deleted",
}


@login_required
async def audit_page(request: web.Request) -> web.Response:
    account = current_user(request)
    assert account is not None
    async with request.app[POOL_KEY].acquire() as conn:
        events = await db.list_audit(conn, account.id)
    return render(request, "audit.html", {"events": events, "labels": ACTION_LABELS})
