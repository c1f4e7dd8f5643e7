"""Remembers the last API request, for tests that check what the gateway forwarded.

The body is read here, chunk by chunk, so its length and SHA-256 are known even when it is
too large to keep; handlers get the kept bytes through `json_body`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from .errors import SandboxError

__all__ = [
    "BODY_KEY",
    "MAX_API_BODY",
    "PROBE_PREFIX",
    "Recorder",
    "json_body",
    "record_requests",
]

PROBE_PREFIX = "/__sandbox/"
MAX_API_BODY = 1024 * 1024  # the exchange's own bodies are small JSON objects
BODY_KEY = web.RequestKey("sandbox_body", bytes)
_CHUNK = 64 * 1024

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Recorder:
    """Holds the JSON description of the last request on a non-probe path."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: dict[str, object] | None = None


def _describe(request: web.Request, length: int, digest: str) -> dict[str, object]:
    # raw_headers keeps the sender's case, order and repeats; the dict folds repeats the
    # way HTTP allows (comma-joined) under lower-case names, so lookups need not guess case.
    pairs = [
        [name.decode("latin-1"), value.decode("latin-1")] for name, value in request.raw_headers
    ]
    folded: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        folded[key] = f"{folded[key]}, {value}" if key in folded else value
    return {
        "method": request.method,
        "path": request.path,
        "raw_path": request.raw_path,
        "query_string": request.rel_url.raw_query_string,  # as sent, still percent-encoded
        "headers": folded,
        "header_list": pairs,
        "remote": request.remote,
        "body_length": length,
        "body_sha256": digest,
    }


def record_requests(recorder: Recorder) -> Middleware:
    """Middleware that records each API request into `recorder` before handling it."""

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path.startswith(PROBE_PREFIX):
            return await handler(request)
        sha = hashlib.sha256()
        length = 0
        kept = bytearray()
        if request.body_exists:
            async for chunk in request.content.iter_chunked(_CHUNK):
                sha.update(chunk)
                length += len(chunk)
                if length <= MAX_API_BODY:
                    kept += chunk
        recorder.last = _describe(request, length, sha.hexdigest())
        if length > MAX_API_BODY:
            raise SandboxError(413, "PAYLOAD_TOO_LARGE")
        request[BODY_KEY] = bytes(kept)
        return await handler(request)

    return middleware


def json_body(request: web.Request) -> dict[str, object]:
    """The request's JSON object; an empty body counts as ``{}``."""
    raw = request[BODY_KEY] if BODY_KEY in request else b""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:  # includes undecodable bytes
        raise SandboxError(400, "INVALID_QUERY") from None
    if not isinstance(data, dict):
        raise SandboxError(400, "INVALID_QUERY")
    return data
