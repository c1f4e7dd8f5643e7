"""Test-only endpoints under ``/__sandbox/``: never part of the exchange's API.

They let the gateway's tests see what was forwarded and provoke what an upstream can do:
stream large bodies both ways, answer slowly, answer with any status, or drop its streams.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from aiohttp import WSCloseCode, hdrs, web

from .appkeys import EXCHANGE_KEY, RECORDER_KEY, STREAM_HUB_KEY
from .errors import SandboxError
from .paging import flag

__all__ = ["big", "drop_streams", "echo", "last_request", "reset", "slow", "status", "streams"]

_CHUNK = 64 * 1024
_BLOCK = b"x" * _CHUNK
_MAX_BIG = 1 << 40
_MAX_DELAY = 600.0
_RETRY_AFTER = "7"


async def last_request(request: web.Request) -> web.Response:
    recorded = request.app[RECORDER_KEY].last
    if recorded is None:
        raise SandboxError(404, "NOT_FOUND")
    return web.json_response(recorded)


async def echo(request: web.Request) -> web.StreamResponse:
    """Stream the request body back as it arrives: memory stays bounded whatever its size."""
    content_type = request.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
    response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: content_type})
    response.enable_chunked_encoding()
    await response.prepare(request)
    async for chunk in request.content.iter_chunked(_CHUNK):
        await response.write(chunk)
    await response.write_eof()
    return response


def _number(request: web.Request, name: str, default: float, maximum: float) -> float:
    try:
        value = float(request.query.get(name, default))
    except ValueError:
        raise SandboxError(400, "INVALID_QUERY") from None
    if not 0 <= value <= maximum:
        raise SandboxError(400, "INVALID_QUERY")
    return value


async def big(request: web.Request) -> web.StreamResponse:
    """``size`` bytes of ``x``; with a Content-Length unless ``chunked=true``."""
    size = _number(request, "size", 0, _MAX_BIG)
    if size != int(size):
        raise SandboxError(400, "INVALID_QUERY")
    remaining = int(size)
    response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "application/octet-stream"})
    if flag(request.query, "chunked"):
        response.enable_chunked_encoding()
    else:
        response.content_length = remaining
    await response.prepare(request)
    block = memoryview(_BLOCK)
    while remaining:
        part = min(remaining, _CHUNK)
        await response.write(block[:part])
        remaining -= part
    await response.write_eof()
    return response


async def slow(request: web.Request) -> web.Response:
    """Answer after ``delay`` seconds (any method, so timeouts on POST can be tested too)."""
    delay = _number(request, "delay", 1.0, _MAX_DELAY)
    await asyncio.sleep(delay)
    return web.json_response({"delay": delay})


async def status(request: web.Request) -> web.Response:
    """Answer with the status in the path; 429 comes with ``Retry-After: 7`` like a real limit."""
    try:
        code = int(request.match_info["code"])
    except ValueError:
        raise SandboxError(400, "INVALID_QUERY") from None
    if not 200 <= code <= 599:
        raise SandboxError(400, "INVALID_QUERY")
    try:
        known: HTTPStatus | None = HTTPStatus(code)
    except ValueError:
        known = None
    reason = known.phrase if known is not None else "Unknown"
    if code in (204, 304):
        return web.Response(status=code, reason=reason)
    if code == 429:
        return web.json_response(
            {"error": "RATELIMIT"}, status=code, headers={hdrs.RETRY_AFTER: _RETRY_AFTER}
        )
    if code >= 400:
        error = known.name if known is not None else "ERROR"
        return web.json_response({"error": error}, status=code, reason=reason)
    return web.json_response({"status": code}, status=code, reason=reason)


async def reset(request: web.Request) -> web.Response:
    """Forget every account and what was recorded: a clean exchange for the next test.

    Open stream sessions stay open; only what they received so far is forgotten.
    """
    request.app[EXCHANGE_KEY].reset()
    request.app[RECORDER_KEY].reset()
    return web.Response(status=204)


async def streams(request: web.Request) -> web.Response:
    """The recent stream sessions: upgrade request, every message received, how each ended."""
    records = request.app[RECORDER_KEY].streams
    return web.json_response({"sessions": [record.as_json() for record in records]})


def _close_code(request: web.Request) -> int:
    raw = request.query.get("code", str(int(WSCloseCode.GOING_AWAY)))
    try:
        code = int(raw)
    except ValueError:
        raise SandboxError(400, "INVALID_QUERY") from None
    # Codes a server may send in a close frame (RFC 6455 section 7.4).
    if not ((1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999):
        raise SandboxError(400, "INVALID_QUERY")
    return code


async def drop_streams(request: web.Request) -> web.Response:
    """End stream sessions mid-stream: ``how=abort`` (default) drops the TCP connection with
    no close frame; ``how=close`` sends CONNECTION_CLOSING and close ``code`` (default 1001).
    ``account_id`` limits it to that account's sessions. Answers ``{"dropped": n}``."""
    how = request.query.get("how", "abort")
    if how not in ("abort", "close"):
        raise SandboxError(400, "INVALID_QUERY")
    code = _close_code(request)
    account_id = request.query.get("account_id")
    dropped = request.app[STREAM_HUB_KEY].drop(
        is_abrupt=how == "abort", code=code, account_id=account_id
    )
    return web.json_response({"dropped": dropped})
