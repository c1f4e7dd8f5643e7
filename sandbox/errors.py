"""Errors in the exchange's own shape: ``{"error": "CODE"}`` with an HTTP status."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

__all__ = ["SandboxError", "render_errors"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SandboxError(Exception):
    """A request the exchange refuses; rendered as ``{"error": code}``."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


def _error_body(status: int) -> str:
    try:
        return HTTPStatus(status).name
    except ValueError:
        return "ERROR"


@web.middleware
async def render_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Render `SandboxError` and aiohttp's own 404/405/413 as exchange-style JSON."""
    try:
        return await handler(request)
    except SandboxError as exc:
        return web.json_response({"error": exc.code}, status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Unknown paths and methods answer like the exchange does, never with aiohttp's HTML.
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response(
            {"error": _error_body(exc.status)}, status=exc.status, headers=headers
        )
