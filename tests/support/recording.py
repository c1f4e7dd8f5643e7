"""An upstream that keeps every byte it is sent, and the strict reading of those bytes.

`RecordingUpstream` is a raw asyncio TCP server: no framework between the socket and the
record, so what a test inspects is exactly what the gateway wrote. It answers each request
it can read with one fixed keep-alive `200` framed by Content-Length (no body for HEAD), and
closes a connection whose bytes it cannot read. `parse_requests` reads recorded bytes the
way a strict HTTP/1.1 server would, and says whether anything is left over: a request hidden
in another's body or header would show up here as an extra request or as unreadable bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import httptools

__all__ = ["ANSWER_BODY", "ParsedRequest", "ReadBytes", "RecordingUpstream", "UpstreamConn",
           "parse_requests"]

ANSWER_BODY = b'{"ok":true}'
_ANSWER_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(ANSWER_BODY))


@dataclass
class ParsedRequest:
    """One request as a strict server reads it."""

    method: str
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    @property
    def path(self) -> bytes:
        return self.target.partition(b"?")[0]

    def header_names(self) -> list[bytes]:
        return [name.lower() for name, _ in self.headers]

    def values(self, name: bytes) -> list[bytes]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


@dataclass
class ReadBytes:
    """Recorded bytes read as requests: the whole requests, and what could not be read."""

    requests: list[ParsedRequest]
    leftover: bytes  # an unfinished request at the end (a body that was cut off)
    error: str | None  # the parser's complaint, if some bytes were not HTTP at all


class _Reader:
    """httptools callbacks that collect whole requests."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.done: list[ParsedRequest] = []
        self.current: ParsedRequest | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", [], bytearray()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.current = ParsedRequest(self.parser.get_method().decode("latin-1"), self._url,
                                     self.parser.get_http_version(), self._headers)

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.current.body = bytes(self._body)
        self.done.append(self.current)
        self.current = None


def parse_requests(data: bytes) -> ReadBytes:
    """Read `data` as a keep-alive stream of HTTP/1.1 requests, strictly (llhttp, no
    leniency). Fed one byte at a time, so where each request ends is known exactly; a
    request that upgrades the connection (or a CONNECT) ends the reading."""
    reader = _Reader()
    end = 0  # where the last whole request ended
    for offset in range(len(data)):
        whole = len(reader.done)
        try:
            reader.parser.feed_data(data[offset:offset + 1])
        except httptools.HttpParserUpgrade:
            return ReadBytes(reader.done, data[offset + 1:], "upgrade")
        except httptools.HttpParserError as exc:
            return ReadBytes(reader.done, data[end:], str(exc) or type(exc).__name__)
        if len(reader.done) > whole:
            end = offset + 1
    return ReadBytes(reader.done, data[end:], None)


@dataclass
class UpstreamConn:
    """One connection the gateway opened to the upstream."""

    index: int
    opened: float  # time.monotonic()
    data: bytearray = field(default_factory=bytearray)
    closed: float | None = None  # when the gateway closed (or cut) it
    read: int = 0  # whole requests read on it
    answered: int = 0  # requests answered on it
    error: str | None = None  # why the upstream's own reading stopped

    @property
    def is_open(self) -> bool:
        return self.closed is None


class _Protocol(asyncio.Protocol):
    def __init__(self, server: RecordingUpstream) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.conn = UpstreamConn(len(server.connections), time.monotonic())
        self.parser = httptools.HttpRequestParser(self)
        self.is_head = False
        self.held: list[bool] = []  # requests read but not answered yet (`hold`)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.append(self.conn)
        self.server._protocols.add(self)

    def data_received(self, data: bytes) -> None:
        self.conn.data += data
        if self.conn.error is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.conn.error = "upgrade"
        except httptools.HttpParserError as exc:
            self.conn.error = str(exc) or type(exc).__name__
            assert self.transport is not None
            self.transport.close()

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.closed = time.monotonic()
        self.server._protocols.discard(self)
        self.server._changed()

    def on_headers_complete(self) -> None:
        self.is_head = self.parser.get_method() == b"HEAD"

    def on_message_complete(self) -> None:
        self.conn.read += 1
        if self.server.hold:
            self.held.append(self.is_head)  # a test that wants the gateway to wait
        else:
            self.answer(self.is_head)
        self.server._changed()

    def answer(self, is_head: bool) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_ANSWER_HEAD if is_head else _ANSWER_HEAD + ANSWER_BODY)
            self.conn.answered += 1


class RecordingUpstream:
    """A raw HTTP/1.1 upstream on a free loopback port that records every byte."""

    def __init__(self) -> None:
        self.connections: list[UpstreamConn] = []
        self.hold = False  # True: read and record, but answer nothing
        self._protocols: set[_Protocol] = set()
        self._server: asyncio.Server | None = None
        self._marks: dict[int, int] = {}
        self._event = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Protocol(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for protocol in list(self._protocols):
                if protocol.transport is not None:
                    protocol.transport.abort()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def release(self) -> None:
        """Answer every request held while `hold` was set, and stop holding."""
        self.hold = False
        for protocol in list(self._protocols):
            held, protocol.held = protocol.held, []
            for is_head in held:
                protocol.answer(is_head)

    def _changed(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def mark(self) -> None:
        """From now on, `received()` returns only bytes sent after this call."""
        self._marks = {conn.index: len(conn.data) for conn in self.connections}

    def received(self) -> list[bytes]:
        """The bytes each connection carried since the last `mark()`, one entry per
        connection that carried any, in the order the connections were opened."""
        out = []
        for conn in self.connections:
            data = bytes(conn.data[self._marks.get(conn.index, 0):])
            if data:
                out.append(data)
        return out

    def requests(self) -> list[ParsedRequest]:
        """Every whole request received since the last `mark()`; fails the test if any
        connection carried bytes a strict server cannot read as whole requests."""
        found: list[ParsedRequest] = []
        for data in self.received():
            read = parse_requests(data)
            assert read.error is None and not read.leftover, (
                f"the upstream received bytes that are not whole requests: {read.error}; "
                f"{data!r}")
            found += read.requests
        return found

    def since_mark(self, conn: UpstreamConn) -> bytes:
        """What `conn` carried since the last `mark()`."""
        return bytes(conn.data[self._marks.get(conn.index, 0):])

    def carrying(self) -> list[UpstreamConn]:
        """The connections that carried bytes since the last `mark()`."""
        return [conn for conn in self.connections
                if len(conn.data) > self._marks.get(conn.index, 0)]

    def open_connections(self) -> list[UpstreamConn]:
        return [conn for conn in self.connections if conn.is_open]

    async def wait_for(self, predicate: object, timeout: float = 5.0) -> bool:
        """Wait until `predicate()` is true (re-checked on every answer and close)."""
        assert callable(predicate)
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), min(left, 0.05))
        return True
