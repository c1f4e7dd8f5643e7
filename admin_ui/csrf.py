"""CSRF protection: every unsafe request must carry a token bound to the session cookie.

The token is an HMAC of the session cookie's value under a key derived from
`GATEWAY_SECRET_KEY`, so it needs no storage, works before login (the anonymous visitor has
a cookie too), and changes when the cookie is rotated at login and logout.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

__all__ = ["CSRF_FIELD", "CSRF_HEADER", "csrf_middleware", "csrf_token", "is_valid_csrf"]

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def csrf_token(key: bytes, session_id: str) -> str:
    """The token forms of this session must send back."""
    digest = hmac.new(key, b"csrf:" + session_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def is_valid_csrf(key: bytes, session_id: str | None, submitted: str | None) -> bool:
    """True when `submitted` is this session's token."""
    if not session_id or not submitted:
        return False
    # SECURITY: constant-time compare of the submitted token.
    return hmac.compare_digest(csrf_token(key, session_id).encode(), submitted.encode())


def csrf_middleware(
    key: bytes,
    session_id_of: Callable[[web.Request], str | None],
    forbidden: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Middleware:
    """A middleware refusing (with `forbidden`) any unsafe request without a valid token."""

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.method in _SAFE_METHODS:
            return await handler(request)
        submitted = request.headers.get(CSRF_HEADER)
        if request.content_type in _FORM_TYPES:
            try:
                form = await request.post()  # cached: the handler reads it again for free
            except ValueError as exc:  # bad encoding or multipart framing
                raise web.HTTPBadRequest(text="The form could not be read.") from exc
            value = form.get(CSRF_FIELD)
            if submitted is None:
                submitted = value if isinstance(value, str) else None
        # SECURITY: no valid token, no state change (403), whatever the handler would do.
        if not is_valid_csrf(key, session_id_of(request), submitted):
            return await forbidden(request)
        return await handler(request)

    return middleware
