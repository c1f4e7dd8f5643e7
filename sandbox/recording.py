"""Remembers what reached the sandbox, for tests that check what the gateway forwarded.

The last API request: its body is read here, chunk by chunk, so its length and SHA-256 are
known even when it is too large to keep; handlers get the kept bytes through `json_body`.
Stream sessions: each one's upgrade request and every message its client sent, the most recent
sessions and messages only, so a long benchmark does not grow the sandbox without bound.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from .clock import iso, now
from .errors import SandboxError

__all__ = [
    "BODY_KEY",
    "MAX_API_BODY",
    "MAX_STREAM_MESSAGES",
    "MAX_STREAM_SESSIONS",
    "PROBE_PREFIX",
    "Recorder",
    "StreamRecord",
    "json_body",
    "record_requests",
]

PROBE_PREFIX = "/__sandbox/"
MAX_API_BODY = 1024 * 1024  # the exchange's own bodies are small JSON objects
BODY_KEY = web.RequestKey("sandbox_body", bytes)
_CHUNK = 64 * 1024
MAX_STREAM_SESSIONS = 100  # sessions remembered, the most recent
MAX_STREAM_MESSAGES = 1000  # messages remembered per session, the most recent
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StreamRecord:
    """One stream session: its upgrade request, what its client sent, how it ended."""

    __slots__ = ("close_code", "closed_at", "number", "opened_at", "received", "request")

    def __init__(self, number: int, request: dict[str, object]) -> None:
        self.number = number
        self.request = request
        self.opened_at = iso(now())
        self.closed_at: str | None = None
        self.close_code: int | None = None
        self.received: deque[dict[str, object]] = deque(maxlen=MAX_STREAM_MESSAGES)

    def text(self, data: str) -> None:
        self.received.append({"time": iso(now()), "text": data})

    def binary(self, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        self.received.append(
            {"time": iso(now()), "binary_length": len(data), "binary_sha256": digest}
        )

    def closed(self, code: int | None) -> None:
        self.closed_at = iso(now())
        self.close_code = code

    def as_json(self) -> dict[str, object]:
        return {
            "session": self.number,
            "request": self.request,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "close_code": self.close_code,
            "received": list(self.received),
        }


class Recorder:
    """The last request on a non-probe path, and the recent stream sessions."""

    __slots__ = ("_sessions", "last", "streams")

    def __init__(self) -> None:
        self.last: dict[str, object] | None = None
        self.streams: deque[StreamRecord] = deque(maxlen=MAX_STREAM_SESSIONS)
        self._sessions = 0

    def open_stream(self, request: web.Request) -> StreamRecord:
        """Start the record of a stream session opened by the upgrade `request`."""
        self._sessions += 1
        record = StreamRecord(self._sessions, _describe(request, 0, _EMPTY_SHA256))
        self.streams.append(record)
        return record

    def reset(self) -> None:
        """Forget the last request, closed sessions, and what open sessions received so far."""
        self.last = None
        kept = [record for record in self.streams if record.closed_at is None]
        self.streams.clear()
        for record in kept:
            record.received.clear()
            self.streams.append(record)


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
