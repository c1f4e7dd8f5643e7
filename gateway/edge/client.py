"""The client leg: one asyncio protocol per connection, parsing requests with httptools.

llhttp in strict mode (no leniency flag is ever set) refuses the classic smuggling shapes
itself: Content-Length twice or beside Transfer-Encoding, bare LF, obs-fold, bad chunk sizes.
This module adds what llhttp lets through but the gateway does not want: other HTTP versions,
absolute-form, authority-form and asterisk targets, CONNECT, fragments, headers past their
size or count limit, and (through `read_headers`) two Host headers or a Transfer-Encoding
other than chunked. A refused request gets the contract's JSON and the connection closes:
what follows bytes the gateway could not read cannot be trusted to be a request of its own.

Requests are answered in order. A pipelined request waits, parsed, until the one before it
is answered; past `max_pipelined` waiting, reading stops until the queue shrinks.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import cast

import httptools

from gateway.edge.edge import Edge
from gateway.edge.exchange import Exchange
from gateway.http.client_ip import Address, client_ip, parse_address
from gateway.http.errors import (
    GatewayError,
    HeadersTooLarge,
    IllegalChars,
    InternalError,
    MalformedRequest,
    RequestTimeout,
    error_answer,
)
from gateway.http.request import RequestView, request_id_for
from gateway.pipeline.context import ConnectionState
from gateway.pipeline.headers import read_headers
from gateway.streams.gate import Upgrade

__all__ = ["ClientConnection"]

log = logging.getLogger(__name__)

_METHODS: dict[bytes, str] = {}
_BODYLESS = frozenset({"GET", "HEAD"})
_REASON_KEPT = 200  # characters of a parser's complaint kept in the log line


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing with this error."""

    def __init__(self, error: GatewayError, view: RequestView | None = None) -> None:
        super().__init__(error.code)
        self.error = error
        self.view = view


class ClientConnection(asyncio.Protocol):
    """One client connection: its parser, its requests in order, its deadlines."""

    # Why reading is paused (a bit each): the upstream's buffer is full, a body waits for
    # its upstream leg, or too many pipelined requests wait their turn.
    UPSTREAM_FULL, WAITING, QUEUED = 1, 2, 4

    __slots__ = ("_header_bytes", "_headers", "_in_head", "_lingering", "_refusal", "_url",
                 "address", "current", "deadline", "edge", "is_closing", "is_half_closed",
                 "parser", "parsing", "paused", "peer", "queue", "state", "transport",
                 "upgrading")

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.state = ConnectionState()
        self.peer = ""
        self.address: Address | None = None
        self.current: Exchange | None = None  # the request being answered
        self.parsing: Exchange | None = None  # the request whose body is being read
        self.queue: collections.deque[Exchange] = collections.deque()
        self.paused = 0
        self.deadline = 0.0  # loop time by which the client must have sent what it owes
        self.is_closing = False  # the answer in progress is the last on this connection
        self.is_half_closed = False  # the client sent its last byte (a FIN)
        self.upgrading: Upgrade | None = None  # a stream upgrade, once its request is read
        self._in_head = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        # A request that could not be read, answered once those before it are.
        self._refusal: tuple[GatewayError, RequestView | None] | None = None
        self._lingering = False  # answered for the last time; reading only to drop

    # --- asyncio protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        self.address = parse_address(self.peer) if self.peer else None
        if not self.edge.admit(self):
            self.transport.abort()  # over a cap: refused before anything is allocated
            return
        # The first request must come as soon as any other's head would have to.
        self.deadline = self.edge.loop.time() + self.edge.settings.client_header_timeout

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            if self.is_half_closed:  # the client's last bytes, read: nothing more will come
                self._close_now()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._after_upgrade(data, exc)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._refuse_unreadable(refused.error, refused.view)
            else:
                log.error("request from %s failed in the HTTP edge", self.peer,
                          exc_info=refused)
                self._refuse_unreadable(InternalError())
        except httptools.HttpParserError as exc:
            # On one line, and short: the reason quotes the client's bytes.
            log.warning("request from %s refused, not valid HTTP/1.1: %r", self.peer,
                        str(exc)[:_REASON_KEPT])
            self._refuse_unreadable(MalformedRequest())

    def _after_upgrade(self, data: bytes, exc: httptools.HttpParserUpgrade) -> None:
        """llhttp stops after a request asking to switch protocols. A WebSocket upgrade on
        a stream path hands the connection to a stream session, with the bytes after it.
        Elsewhere the request was answered as any other, and what follows it is read as the
        next request."""
        offset = int(exc.args[0]) if exc.args else len(data)
        upgrading, self.upgrading = self.upgrading, None
        if upgrading is not None:
            self.edge.streams.take_over(self, upgrading, data[offset:])
            return
        self.parser = httptools.HttpRequestParser(self)
        if offset < len(data):
            self.data_received(data[offset:])

    def eof_received(self) -> bool | None:
        # A half-close: answer what was asked, then close. TLS cannot stay half-open.
        self.is_half_closed = True
        if self._lingering or self.current is None or self.edge.is_tls:
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.edge.forget(self)
        current, self.current = self.current, None
        if current is not None:
            current.client_lost()
        while self.queue:
            self.queue.popleft().client_lost()

    def pause_writing(self) -> None:
        if self.current is not None:
            self.current.client_paused(True)

    def resume_writing(self) -> None:
        if self.current is not None:
            self.current.client_paused(False)

    # --- parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self.deadline = self.edge.loop.time() + self.edge.settings.client_header_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self.edge.settings.max_header_size:
            raise _Refused(HeadersTooLarge())

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        settings = self.edge.settings
        if (self._header_bytes > settings.max_header_size
                or len(self._headers) >= settings.max_header_count):
            raise _Refused(HeadersTooLarge())
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self.is_closing:
            # An answer already said this connection ends: what follows in the same read is
            # not a request the gateway takes (it would go upstream and never be answered).
            self.pause(self.QUEUED)
            return
        parser = self.parser
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = raw_method.decode("ascii")
            if len(_METHODS) < 64:
                _METHODS[raw_method] = method
        view = RequestView(method, self._url, self.peer, self.edge.scheme)
        view.version = parser.get_http_version()
        view.keep_alive = parser.should_keep_alive()
        try:
            self._check_head(view)
        except GatewayError as error:
            raise _Refused(error, view) from None
        edge = self.edge
        if view.path in edge.streams.routes:  # a stream path: an upgrade, or its refusal
            refusal = edge.streams.upgrade(self, view, parser.should_upgrade())
            if refusal is not None:
                raise _Refused(refusal, view)  # answered in turn, then the connection closes
            return
        exchange = Exchange(self, view, time.perf_counter_ns())
        self.parsing = exchange
        self.deadline = (edge.loop.time() + edge.settings.client_body_timeout
                         if view.has_body else 0.0)
        if self.current is None:
            self.current = exchange
            exchange.start()
        else:
            self.queue.append(exchange)
            if len(self.queue) >= edge.settings.max_pipelined:
                self.pause(self.QUEUED)

    def _check_head(self, view: RequestView) -> None:
        if view.version not in ("1.1", "1.0"):
            raise MalformedRequest("Only HTTP/1.1 and HTTP/1.0 are accepted")
        target = view.target
        # SECURITY: origin-form only: an absolute URL, an authority (CONNECT) or `*` could
        # name another host or path than the one matched.
        if not target.startswith(b"/") or view.method == "CONNECT":
            raise MalformedRequest("The request target must be a path")
        if b"#" in target:
            raise IllegalChars
        read_headers(view, self._headers)
        if view.has_body and self.parser.should_upgrade():
            # SECURITY: llhttp ends an upgrade request at its head and hands back what
            # follows as another protocol's bytes: its body would be read as a request.
            raise MalformedRequest("A request asking to switch protocols must not carry a body")
        if view.is_chunked and view.version == "1.0":
            view.keep_alive = False  # RFC 9112 section 6.1: the framing cannot be trusted
        if view.method in _BODYLESS and view.has_body:
            # SECURITY: a body the upstream may not expect could be read as a second request.
            raise IllegalChars(f"A {view.method} request must not carry a body")
        if view.host is None and view.version == "1.1":
            raise MalformedRequest("An HTTP/1.1 request must carry a Host header")

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.client_body(body)

    def on_message_complete(self) -> None:
        exchange, self.parsing = self.parsing, None
        if exchange is not None:
            exchange.client_body_end()
        self.deadline = 0.0 if self.current is not None else self._idle_deadline()

    # --- what exchanges ask of their connection ------------------------------------------

    def client_address(self, view: RequestView) -> Address:
        """The client's address: the peer's, or behind a trusted proxy what it says."""
        trusted = self.edge.settings.trusted_proxies
        if not trusted:
            if self.address is None:
                return client_ip(None, (), ())
            return self.address
        forwarded = [value.decode("latin-1") for value in view.forwarded_for]
        # SECURITY: X-Forwarded-For is believed only from a trusted proxy (`client_ip`).
        return client_ip(self.peer, forwarded, trusted)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.transport is not None:
                self.transport.resume_reading()

    def exchange_finished(self, exchange: Exchange, closing: bool) -> None:
        """The current request is answered: close, or go on with the next one."""
        if exchange is not self.current:  # a queued one whose client left
            return
        self.current = None
        if closing or self.is_closing:
            self.close()
            return
        if self.queue:
            following = self.current = self.queue.popleft()
            if len(self.queue) < self.edge.settings.max_pipelined and self._refusal is None:
                self.resume(self.QUEUED)
            following.start()
        elif self._refusal is not None:
            self._send_refusal(*self._refusal)
        elif self.is_half_closed:
            self.close()
        elif self.parsing is None and not self._in_head:
            self.deadline = self._idle_deadline()

    def _idle_deadline(self) -> float:
        return self.edge.loop.time() + self.edge.settings.client_timeout

    def close(self) -> None:
        """Close once what was written has gone out.

        Not at once: bytes of the client's still unread (a refused body, requests after the
        last answered one) would make the kernel reset the connection, and a reset can
        destroy answers the client has not read yet. So the gateway half-closes, drops what
        still comes, and closes when the client does, or after `client_linger_timeout`.
        """
        self.is_closing = True
        transport = self.transport
        if transport is None or self._lingering:
            return
        if not transport.can_write_eof():  # TLS: no half-close
            transport.close()
            return
        self._lingering = True
        transport.write_eof()
        self.paused = 0
        transport.resume_reading()
        settings = self.edge.settings
        self.deadline = self.edge.loop.time() + (
            self.edge.tick if self.is_half_closed else settings.client_linger_timeout)

    def _close_now(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def drain(self) -> None:
        """The gateway is stopping: an idle connection closes now, a busy one after its
        answer (which says so)."""
        self.is_closing = True
        if self.current is None and not self._in_head and self.parsing is None:
            self.close()

    # --- deadlines and refusals ----------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        """Called by the edge's sweep about every tick."""
        current = self.current
        if current is not None:
            current.check_deadline(now)
        if not self.deadline or now < self.deadline:
            return
        self.deadline = 0.0
        if self._lingering:  # the client keeps its side open: enough
            self._close_now()
            return
        self.edge.timed_out += 1
        if self.parsing is not None:  # a body that does not come
            self.parsing.client_body_late()
            self.close()
        elif self._in_head:  # a head that does not come (slowloris)
            self._refuse_unreadable(RequestTimeout())
        elif current is None:  # idle past the keep-alive timeout
            self.close()

    def _refuse_unreadable(self, error: GatewayError, view: RequestView | None = None) -> None:
        """Answer a request that could not be read, then close. Requests read whole before
        it are answered first, in order; nothing after it is read. Like every answer, the
        refusal is counted and gets an access-log line."""
        self.pause(self.QUEUED)  # nothing more is read from this connection
        bad = self.parsing  # a request whose body turned unreadable, if that was it
        current = self.current
        if bad is not None:
            view = bad.view
            if bad is current:  # answering it: what it sent so far is all it gets
                self._drop_queue()
                self.is_closing = True
                current.refuse(error)
                return
            while self.queue and self.queue[-1] is not bad:
                self.queue.pop().client_lost()
            self.queue.pop().client_lost()  # its turn never comes: the refusal takes it
        if current is not None and (view is None or current.view is not view):
            self._refusal = (error, view)  # once the requests ahead of it are answered
            return
        self._drop_queue()
        self._send_refusal(error, view)

    def _drop_queue(self) -> None:
        while self.queue:
            self.queue.popleft().client_lost()

    def _send_refusal(self, error: GatewayError, view: RequestView | None) -> None:
        if view is None:
            view = RequestView("UNKNOWN", b"/", self.peer, self.edge.scheme)
        request_id = request_id_for(view.request_id)
        self.write(error_answer(error, request_id, closing=True))
        self.edge.outcomes.add(None, view, request_id, error.status, error.code,
                               time.perf_counter_ns())
        self.close()
