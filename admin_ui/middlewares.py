"""What every admin UI answer gets: the security headers, and an HTML page for every error.

The headers are added as the response is prepared (aiohttp's `on_response_prepare`), not by a
middleware, so an answer no middleware saw (an exception raised past them, a static file, a
router's 404 or 405) carries them too. Errors, raised or not, become pages from one table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

from admin_ui.accesslog import loggable_path
from admin_ui.render import render
from admin_ui.sessions import is_https_admin
from admin_ui.settings import SETTINGS_KEY

__all__ = ["HSTS", "SECURITY_HEADERS", "add_security_headers", "error_page", "error_pages"]

log = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# SECURITY: no inline script or style, no framing, no referrer (links carry tokens).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# A year, the figure browsers' preload lists ask for; sent only when the public URL is https.
HSTS = "max-age=31536000; includeSubDomains"

# Status -> (title, what to do). Other statuses get their reason phrase and a generic line.
_PAGES: dict[int, tuple[str, str]] = {
    400: ("Bad request", "What you sent could not be read. Go back, reload the page and try "
                         "again."),
    403: ("Not allowed", "You may not open this page."),
    404: ("Page not found", "There is nothing here. Check the address."),
    405: ("Not allowed", "This page cannot be used that way. Go back and use its links or "
                         "buttons."),
    413: ("Form too large", "What you sent is too large. Shorten it and try again."),
    500: ("Something went wrong", "An unexpected error occurred; it has been logged. Please "
                                  "try again."),
}
# Headers of a raised error that the page must keep.
_KEPT = ("Allow", "Retry-After", "WWW-Authenticate")


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: the security headers on every answer, errors included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if is_https_admin(request.app[SETTINGS_KEY]):
        # SECURITY: once seen, the browser never again tries the admin UI over plain HTTP.
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    if not request.path.startswith("/static/") or response.status >= 400:
        # Pages hold CSRF tokens, and one holds an API key: no cache keeps them.
        response.headers.setdefault("Cache-Control", "no-store")


def error_page(request: web.Request, status: int) -> web.Response:
    title, message = _PAGES.get(status) or (HTTPStatus(status).phrase,
                                            "The request was refused.")
    return render(request, "error.html", {"title": title, "message": message}, status=status)


@web.middleware
async def error_pages(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Every error as a page of the UI: raised HTTP errors, and any exception (a 500)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects
        page = error_page(request, exc.status)
        for name in _KEPT:
            if name in exc.headers:
                page.headers[name] = exc.headers[name]
        page.cookies.update(exc.cookies)  # a session cookie set on the way out
        return page
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("error handling %s %s", request.method, loggable_path(request))
        return error_page(request, 500)
