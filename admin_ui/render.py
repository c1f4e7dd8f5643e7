"""Page rendering: the shared template context, and the fixed notices pages can show."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from admin_ui.csrf import CSRF_FIELD, csrf_token
from admin_ui.devmail import MAILBOX_KEY
from admin_ui.security import KEYS_KEY
from admin_ui.sessions import current_user, session_id

__all__ = ["NOTICES", "render", "template_context"]

# Notices are chosen by a short code in the query string, never echoed from it.
NOTICES: Mapping[str, str] = {
    "deleted": "The key was deleted. Every gateway refuses it from now on.",
    "resent": "We sent a new confirmation link. Earlier links for this key no longer work.",
    "2fa-disabled": "Two-factor authentication is off.",
    "logged-out": "You are logged out.",
    "password-changed": "Your password was changed. Log in with the new one.",
    "verified": "Your email address is confirmed. You can log in now.",
}


def template_context(request: web.Request) -> dict[str, Any]:
    """What every template sees: the user, the CSRF token, the notice, dev mode."""
    sid = session_id(request)
    user = current_user(request) if sid else None
    return {
        "user": user,
        "csrf_field": CSRF_FIELD,
        "csrf_token": csrf_token(request.app[KEYS_KEY].csrf, sid) if sid else "",
        "notice": NOTICES.get(request.query.get("done", "")),
        "is_dev": MAILBOX_KEY in request.app,
    }


def render(request: web.Request, template: str, context: Mapping[str, Any] | None = None,
           *, status: int = 200) -> web.Response:
    return aiohttp_jinja2.render_template(
        template, request, {**template_context(request), **(context or {})}, status=status)
