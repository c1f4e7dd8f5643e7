"""The upstream leg: a pool of raw keep-alive HTTP/1.1 connections per upstream origin.

Each connection is an asyncio protocol with an httptools response parser; while it carries a
request, its parser's callbacks go to that request's `Exchange`, which streams the answer on.
A connection goes back to its pool only when its answer ended cleanly and both sides keep it
alive; an answer framed by the end of the connection is never pooled.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import Callable
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

from gateway.config.tls import upstream_context
from gateway.pipeline.headers import ResponseHead, read_response_headers

__all__ = ["UpstreamConnection", "UpstreamPool", "UpstreamPools", "UpstreamUser"]

log = logging.getLogger(__name__)

Handed = Callable[["UpstreamConnection | BaseException"], None]


class UpstreamUser(Protocol):
    """What a connection tells the request it carries (an `Exchange`)."""

    is_head: bool

    def upstream_head(self, head: ResponseHead, eof_framed: bool) -> None: ...

    def upstream_body(self, data: bytes) -> None: ...

    def upstream_done(self, reusable: bool) -> None: ...

    def upstream_lost(self, exc: BaseException | None) -> None: ...

    def upstream_paused(self, is_paused: bool) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One raw connection to an upstream, carrying one request at a time."""

    __slots__ = ("_eof_framed", "_head", "_interim", "_parser", "_raw", "is_reused", "pool",
                 "transport", "user")

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.user: UpstreamUser | None = None
        self.is_reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._head = ResponseHead()
        self._raw: list[tuple[bytes, bytes]] = []
        self._interim = False
        self._eof_framed = False

    # --- asyncio protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.user is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            user, self.user = self.user, None
            self.close()
            if user is not None:
                user.upstream_lost(exc)

    def eof_received(self) -> bool | None:
        return False  # close: an upstream that half-closes is done with this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        user, self.user = self.user, None
        if user is None:
            return
        if self._eof_framed and exc is None:  # a clean close ends an answer framed by it
            user.upstream_done(False)
        else:
            user.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.user is not None:
            self.user.upstream_paused(True)

    def resume_writing(self) -> None:
        if self.user is not None:
            self.user.upstream_paused(False)

    # --- parser callbacks ----------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._head.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        head = self._head
        head.status = status = self._parser.get_status_code()
        raw, self._raw = self._raw, []
        if status < 200:  # interim (100, 103): not passed on; the real answer follows
            self._interim = True
            return
        read_response_headers(head, raw)
        user = self.user
        assert user is not None
        head.keeps_alive = head.keeps_alive and self._parser.should_keep_alive()
        if user.is_head:
            # Never a body after an answer to HEAD, whatever its headers say: the parser
            # cannot be told so, so the answer ends here and the next gets a new parser.
            self._parser = httptools.HttpResponseParser(self)
            user.upstream_head(head, False)
            self._finish(head.keeps_alive)
            return
        self._eof_framed = (head.content_length is None and not head.is_chunked
                            and status not in (204, 304))
        user.upstream_head(head, self._eof_framed)

    def on_body(self, body: bytes) -> None:
        if self.user is not None:
            self.user.upstream_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._head = ResponseHead()
            return
        if self.user is not None:
            self._finish(self._head.keeps_alive)

    # --- ours ----------------------------------------------------------------------------

    def send(self, user: UpstreamUser, data: bytes) -> None:
        """Start carrying `user`'s request, whose head (and maybe body) is `data`."""
        self.user = user
        self._head = ResponseHead()
        self._eof_framed = False
        assert self.transport is not None
        self.transport.write(data)

    def _finish(self, keeps_alive: bool) -> None:
        user, self.user = self.user, None
        assert user is not None
        user.upstream_done(keeps_alive)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Cut the connection at once (a request given up half-sent, a client gone)."""
        self.user = None
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Connections to one origin: idle ones reused newest first, at most `limit` open."""

    def __init__(self, origin: str, limit: int, connect_timeout: float,
                 tls: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(origin)
        self.origin = origin
        self.host = parts.hostname or "127.0.0.1"
        self.is_tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.is_tls else 80)
        self.host_header = parts.netloc.encode("idna") if parts.netloc else self.host.encode()
        self._ssl = (tls or upstream_context()) if self.is_tls else None
        self._limit = max(1, limit)
        self._connect_timeout = connect_timeout
        self._idle: list[UpstreamConnection] = []
        self._open: set[UpstreamConnection] = set()
        self._connecting = 0
        self._waiting: collections.deque[Handed] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()

    def acquire(self, handed: Handed) -> UpstreamConnection | None:
        """An idle connection at once, or None and `handed(connection or error)` later."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                conn.is_reused = True
                return conn
        if len(self._open) + self._connecting < self._limit:
            self._connect(handed)
        else:
            self._waiting.append(handed)
        return None

    def cancel(self, handed: Handed) -> None:
        """A request that no longer waits for a connection (its client went away)."""
        try:
            self._waiting.remove(handed)
        except ValueError:
            pass

    def release(self, conn: UpstreamConnection) -> None:
        """A connection whose answer ended cleanly and that both sides keep alive."""
        if conn.transport is None or conn.transport.is_closing():
            return
        if self._waiting:
            conn.is_reused = True
            self._waiting.popleft()(conn)
        else:
            self._idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """A connection that closed; a waiting request may open another."""
        self._open.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        if self._waiting and len(self._open) + self._connecting < self._limit:
            self._connect(self._waiting.popleft())

    def _connect(self, handed: Handed) -> None:
        self._connecting += 1
        task = asyncio.ensure_future(self._open_connection(handed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_connection(self, handed: Handed) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: UpstreamConnection(self), self.host, self.port, ssl=self._ssl,
                server_hostname=self.host if self._ssl else None), self._connect_timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self._connecting -= 1
            handed(exc)
            return
        self._connecting -= 1
        self._open.add(conn)
        handed(conn)

    def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        for task in self._tasks:
            task.cancel()
        for handed in self._waiting:
            handed(ConnectionError("the gateway is stopping"))
        self._waiting.clear()

    @property
    def idle_count(self) -> int:
        return len(self._idle)


class UpstreamPools:
    """One pool per origin the route table names, made when first asked for."""

    def __init__(self, limit: int, connect_timeout: float,
                 tls: ssl.SSLContext | None = None) -> None:
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._tls = tls
        self._pools: dict[str, UpstreamPool] = {}

    def get(self, origin: str) -> UpstreamPool:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = UpstreamPool(origin, self._limit,
                                                      self._connect_timeout, self._tls)
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
