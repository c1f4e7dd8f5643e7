"""The upstream leg of a stream: one raw connection per session, upgraded by the gateway.

The upgrade request is built as a REST request's head is (`upstream_request_head`: the same
header rules, `X-Gateway-*` naming the session's key, the upstream secret), its answer is
parsed with httptools and checked, and from then on wsproto frames the connection as a
client. What arrives is handed whole, message by message, to the session that owns the leg.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError

from gateway.streams.handshake import accept_for, upgrade_request_framing
from gateway.streams.messages import MESSAGE_TOO_BIG, NORMAL

__all__ = ["HandshakeFailed", "StreamTarget", "StreamUpstream", "UpstreamUser", "open_upstream"]

log = logging.getLogger(__name__)


class HandshakeFailed(Exception):
    """The upstream did not switch to a WebSocket (a refusal, or a bad answer)."""


class UpstreamUser(Protocol):
    """What the upstream leg tells its session."""

    def upstream_message(self, data: str | bytes) -> None: ...

    def upstream_closed(self, code: int, reason: str, is_clean: bool) -> None: ...

    def upstream_paused(self, is_paused: bool) -> None: ...


class StreamTarget:
    """Where a stream route's sessions go: host, port, TLS, and the upgrade's target."""

    __slots__ = ("host", "host_header", "port", "ssl", "target", "url")

    def __init__(self, url: str, tls: ssl.SSLContext | None = None) -> None:
        """`tls`: the context for wss:// (the REST upstreams' own, with its CA file)."""
        parts = urlsplit(url)
        self.url = url
        self.host = parts.hostname or "127.0.0.1"
        is_tls = parts.scheme == "wss"
        self.port = parts.port or (443 if is_tls else 80)
        self.host_header = parts.netloc.encode("idna")
        target = parts.path or "/"
        self.target = (target + "?" + parts.query if parts.query else target).encode()
        self.ssl: ssl.SSLContext | None = None
        if is_tls:
            self.ssl = tls if tls is not None else ssl.create_default_context()


class StreamUpstream(asyncio.Protocol):
    """The connection: its handshake, then frames both ways."""

    def __init__(self, key: bytes, owner: UpstreamUser, max_message_size: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.user: UpstreamUser | None = None  # the owner, once the upgrade is through
        self._owner: UpstreamUser | None = owner
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Read even when nobody waits any more (a handshake that outlived its deadline).
        self.opened.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.heard = 0.0  # loop time of the last bytes from the upstream
        self.ws: Connection | None = None
        self._key = key
        self._max = max_message_size
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._parts: list[str | bytes] = []
        self._size = 0
        self._is_done = False

    # --- asyncio protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.heard = loop.time()
        if self.ws is None:
            self._handshake_data(data)
            return
        try:
            self.ws.receive_data(data)
        except LocalProtocolError:  # bytes after the close: nothing to read in them
            return
        self._read_events()

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(HandshakeFailed(f"connection lost: {exc!r}"))
        self._done(1006, "", is_clean=False)

    def pause_writing(self) -> None:
        if self.user is not None:
            self.user.upstream_paused(True)

    def resume_writing(self) -> None:
        if self.user is not None:
            self.user.upstream_paused(False)

    # --- the handshake's answer (httptools callbacks) ------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        assert self._parser is not None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = int(exc.args[0]) if exc.args else len(data)
            self._switched(data[offset:])
        except (httptools.HttpParserError, HandshakeFailed) as exc:
            self._fail(HandshakeFailed(str(exc)[:200]))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if status != 101 or not self._parser.should_upgrade():
            raise HandshakeFailed(f"the upstream answered {status} to the upgrade")
        headers = dict(self._headers)
        if headers.get(b"upgrade", b"").strip().lower() != b"websocket":
            raise HandshakeFailed("the upstream switched to another protocol")
        if headers.get(b"sec-websocket-accept", b"").strip() != accept_for(self._key):
            raise HandshakeFailed("the upstream's Sec-WebSocket-Accept is wrong")
        if b"sec-websocket-extensions" in headers or b"sec-websocket-protocol" in headers:
            raise HandshakeFailed("the upstream chose an extension or subprotocol not offered")

    def _switched(self, rest: bytes) -> None:
        self._parser = None
        self.ws = Connection(ConnectionType.CLIENT)
        self.user, self._owner = self._owner, None
        if not self.opened.done():
            self.opened.set_result(None)
        if rest:
            self.ws.receive_data(rest)
            self._read_events()

    def _fail(self, exc: HandshakeFailed) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    # --- frames --------------------------------------------------------------------------

    def _read_events(self) -> None:
        ws = self.ws
        assert ws is not None
        for event in ws.events():
            if isinstance(event, TextMessage | BytesMessage):
                data: str | bytes = (bytes(event.data) if isinstance(event.data, bytearray)
                                     else event.data)
                self._size += len(data) if isinstance(data, bytes) or data.isascii() else len(
                    data.encode())
                if self._size > self._max:
                    self.close(MESSAGE_TOO_BIG, "message too big")
                    self._done(MESSAGE_TOO_BIG, "the upstream sent a message too big",
                               is_clean=False)
                    return
                if not event.message_finished:
                    self._parts.append(data)
                    continue
                if self._parts:
                    self._parts.append(data)
                    data = ("".join(cast(list[str], self._parts)) if isinstance(data, str)
                            else b"".join(cast(list[bytes], self._parts)))
                    self._parts = []
                self._size = 0
                if self.user is not None:
                    self.user.upstream_message(data)
            elif isinstance(event, Ping):
                self._send(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    self._send(ws.send(event.response()))
                if self.transport is not None:
                    self.transport.close()
                self._done(event.code, event.reason or "", is_clean=True)
                return

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _done(self, code: int, reason: str, *, is_clean: bool) -> None:
        if self._is_done:
            return
        self._is_done = True
        user, self.user = self.user, None
        if user is not None:
            user.upstream_closed(code, reason, is_clean)

    # --- what the session asks -----------------------------------------------------------

    def send_text(self, text: str) -> None:
        if self.ws is not None and self.ws.state is ConnectionState.OPEN:
            self._send(self.ws.send(TextMessage(text)))

    def ping(self) -> None:
        if self.ws is not None and self.ws.state is ConnectionState.OPEN:
            self._send(self.ws.send(Ping(b"keygate")))

    def pause_reading(self, is_paused: bool) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if is_paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """End the leg: a close frame when open, then the connection (no answer awaited:
        the session that owned it is done with it)."""
        self.user = self._owner = None
        self._is_done = True
        ws = self.ws
        if ws is not None and ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            try:
                self._send(ws.send(CloseConnection(code, reason)))
            except LocalProtocolError:
                pass
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.user = self._owner = None
        self._is_done = True
        if self.transport is not None:
            self.transport.abort()


async def open_upstream(target: StreamTarget, head: Callable[[bytes], bytes],
                        owner: UpstreamUser, max_message_size: int,
                        timeout: float) -> StreamUpstream:
    """Connect and upgrade; `head(framing)` is the upgrade request's head, given the upgrade
    headers to end with. From the upgrade on, `owner` hears of every message, so none that
    follows the 101 at once is lost. Raises `HandshakeFailed`, `OSError` or `TimeoutError`."""
    key, framing = upgrade_request_framing()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    _, leg = await asyncio.wait_for(loop.create_connection(
        lambda: StreamUpstream(key, owner, max_message_size), target.host, target.port,
        ssl=target.ssl, server_hostname=target.host if target.ssl else None), timeout)
    assert leg.transport is not None
    leg.transport.write(head(framing))
    try:
        await asyncio.wait_for(asyncio.shield(leg.opened), max(0.01, deadline - loop.time()))
    except BaseException:
        leg.abort()
        raise
    leg.heard = loop.time()
    return leg

