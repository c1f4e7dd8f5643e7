"""Server-side sessions: a random id in an HttpOnly cookie, the state in PostgreSQL.

Every visitor gets a cookie (the CSRF token of anonymous forms is bound to it), but only a
login creates a row, under the SHA-256 of the id, so a database leak yields no session.
The id is replaced at login, at the second factor and at logout (no session fixation).

When the public URL (`GATEWAY_ADMIN_URL`) is https, the cookie is `__Host-keygate_session`:
the browser then keeps it only if it is Secure, for the whole host and no other (no Domain),
so neither a plain-HTTP answer nor a sibling subdomain can plant or overwrite it. On a
plain-http URL (development) it is `keygate_session`, Secure only when served over TLS.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from admin_ui import db
from admin_ui.db import POOL_KEY, AccountRow
from admin_ui.settings import SETTINGS_KEY
from gateway.config.settings import Settings
from gateway.http.client_ip import client_ip, is_trusted, parse_ip

__all__ = [
    "COOKIE_NAME",
    "PARTIAL_SESSION_TTL",
    "SECURE_COOKIE_NAME",
    "SessionState",
    "cookie_name",
    "current_user",
    "end_session",
    "is_https_admin",
    "is_secure",
    "partial_user",
    "redirect",
    "remote_ip",
    "session_id",
    "session_middleware",
    "start_session",
]

COOKIE_NAME = "keygate_session"
SECURE_COOKIE_NAME = f"__Host-{COOKIE_NAME}"
PARTIAL_SESSION_TTL = 300.0  # between the password and the second factor
_SID_RE = re.compile(r"[A-Za-z0-9_-]{43}")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SessionState:
    """This request's session: the cookie's id and, once logged in, the account."""

    __slots__ = ("account", "is_dirty", "is_partial", "sid")

    def __init__(self, sid: str, *, is_dirty: bool) -> None:
        self.sid = sid
        self.account: AccountRow | None = None
        self.is_partial = False
        self.is_dirty = is_dirty  # the cookie must be (re)sent

    def __repr__(self) -> str:
        return f"SessionState(user={self.account.id if self.account else None})"


_STATE = web.RequestKey("keygate_session", SessionState)


def is_https_admin(settings: Settings) -> bool:
    """True when the admin UI's public URL (`GATEWAY_ADMIN_URL`) is https."""
    return settings.admin_url.lower().startswith("https://")


def cookie_name(settings: Settings) -> str:
    """The session cookie's name: `__Host-` prefixed when the public URL is https."""
    return SECURE_COOKIE_NAME if is_https_admin(settings) else COOKIE_NAME


def _hash(sid: str) -> bytes:
    return hashlib.sha256(sid.encode()).digest()


def _new_sid() -> str:
    return secrets.token_urlsafe(32)


def _state(request: web.Request) -> SessionState:
    return request[_STATE]


def session_id(request: web.Request) -> str | None:
    return request[_STATE].sid if _STATE in request else None


def current_user(request: web.Request) -> AccountRow | None:
    """The logged-in account (password and, when on, second factor), or None."""
    state = _state(request)
    return None if state.is_partial else state.account


def partial_user(request: web.Request) -> AccountRow | None:
    """The account whose password was accepted and whose second factor is awaited."""
    state = _state(request)
    return state.account if state.is_partial else None


def redirect(location: str) -> web.Response:
    """303 See Other: after a POST the browser GETs `location`."""
    return web.Response(status=303, headers={"Location": location})


def remote_ip(request: web.Request) -> str:
    """The client's address (through trusted proxies only)."""
    trusted = request.app[SETTINGS_KEY].trusted_proxies
    # SECURITY: X-Forwarded-For is believed only from a configured trusted proxy.
    return client_ip(request.remote, request.headers.getall("X-Forwarded-For", []), trusted)[1]


def is_secure(request: web.Request) -> bool:
    """Served over TLS, directly or behind a trusted proxy that says so."""
    if request.secure:
        return True
    trusted = request.app[SETTINGS_KEY].trusted_proxies
    peer = parse_ip(request.remote or "")
    # SECURITY: X-Forwarded-Proto is believed only from a trusted proxy.
    if peer is None or not trusted or not is_trusted(peer, trusted):
        return False
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return proto == "https"


async def start_session(request: web.Request, account: AccountRow, *, is_partial: bool) -> None:
    """Log `account` in (or half in): a new id, so a planted cookie is worth nothing."""
    state = _state(request)
    settings = request.app[SETTINGS_KEY]
    ttl = min(PARTIAL_SESSION_TTL, settings.session_ttl) if is_partial else settings.session_ttl
    new_sid = _new_sid()
    async with request.app[POOL_KEY].acquire() as conn:
        await db.delete_session(conn, _hash(state.sid))
        await db.insert_session(conn, _hash(new_sid), account.id, is_partial=is_partial,
                                ttl=ttl, client_ip=remote_ip(request))
    state.sid, state.account, state.is_partial, state.is_dirty = new_sid, account, is_partial, True


async def end_session(request: web.Request) -> None:
    """Log out: the row goes, and the browser gets a fresh anonymous id."""
    state = _state(request)
    async with request.app[POOL_KEY].acquire() as conn:
        await db.delete_session(conn, _hash(state.sid))
    state.sid, state.account, state.is_partial, state.is_dirty = _new_sid(), None, False, True


def _set_cookie(request: web.Request, response: web.StreamResponse, state: SessionState) -> None:
    if not state.is_dirty or response.prepared:
        return
    settings = request.app[SETTINGS_KEY]
    # SECURITY: HttpOnly (no script reads it), SameSite=Lax (not sent on cross-site POSTs, but
    # sent when the user follows an emailed link), Secure whenever the public URL is https
    # (a TLS proxy in front may talk plain HTTP to us) or we are served over TLS; Path=/ and
    # no Domain, as the __Host- prefix requires.
    response.set_cookie(
        cookie_name(settings), state.sid, path="/", httponly=True, samesite="Lax",
        secure=is_https_admin(settings) or is_secure(request),
        max_age=int(settings.session_ttl) if state.account is not None else None,
    )


@web.middleware
async def session_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Loads the session before the handler and sends a new cookie after it when needed."""
    if request.path.startswith("/static/"):
        return await handler(request)
    sid = request.cookies.get(cookie_name(request.app[SETTINGS_KEY]), "")
    if _SID_RE.fullmatch(sid):
        state = SessionState(sid, is_dirty=False)
        async with request.app[POOL_KEY].acquire() as conn:
            row = await db.load_session(conn, _hash(sid))
        if row is not None:
            state.account, state.is_partial = row.account, row.is_partial
    else:
        state = SessionState(_new_sid(), is_dirty=True)
    request[_STATE] = state
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _set_cookie(request, exc, state)
        raise
    _set_cookie(request, response, state)
    return response
