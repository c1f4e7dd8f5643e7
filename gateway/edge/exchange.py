"""One request's journey: its steps, the upstream leg, and the answer streamed back.

An `Exchange` is made when a request's head has been parsed. It runs the pipeline's steps
(synchronously on the warm path: no task), takes an upstream connection from the pool,
writes the request head, streams the body as it arrives and the answer as it comes back,
with the flow control of each leg tied to the other, and records the outcome once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from gateway.edge.edge import Edge
from gateway.edge.upstream import UpstreamConnection, UpstreamPool
from gateway.http.client_ip import Address
from gateway.http.errors import (
    GatewayError,
    InternalError,
    KeyInvalid,
    PayloadTooLarge,
    RequestTimeout,
    UpstreamTimeout,
    UpstreamUnavailable,
    answer_bytes,
    error_answer,
)
from gateway.http.paths import normalise_path
from gateway.http.request import RequestView, request_id_for
from gateway.observability.metrics import Metrics
from gateway.pipeline.context import ConnectionState, RequestContext
from gateway.pipeline.headers import ResponseHead, client_response_head, upstream_request_head
from gateway.pipeline.local import LOCAL_ANSWERS, LocalAnswer
from gateway.pipeline.runner import match_route, run_steps

__all__ = ["ClientSide", "Exchange"]


class ClientSide(Protocol):
    """What an exchange asks of the client connection it answers (`ClientConnection`)."""

    UPSTREAM_FULL: int  # reasons to pause reading
    WAITING: int
    edge: Edge
    state: ConnectionState
    is_closing: bool

    def client_address(self, view: RequestView) -> Address: ...

    def write(self, data: bytes) -> None: ...

    def abort(self) -> None: ...

    def pause(self, reason: int) -> None: ...

    def resume(self, reason: int) -> None: ...

    def exchange_finished(self, exchange: Exchange, closing: bool) -> None: ...

log = logging.getLogger(__name__)

T = TypeVar("T")

_BUFFERED_MAX = 64 * 1024  # body bytes held while the upstream leg is being set up
_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_RETRIED_METHODS = frozenset({"GET", "HEAD"})
_CLIENT_GONE = 499  # nginx's status for a client that left before its answer


class Exchange:
    """A request from its parsed head to the last byte of its answer."""

    __slots__ = ("body_done", "body_seen", "buffered", "client", "client_chunked", "closing",
                 "code", "ctx", "deadline", "finished", "head", "is_head", "out", "pool",
                 "reading", "request_id", "response_started", "retried", "started", "status",
                 "upstream", "upstream_started", "view")

    def __init__(self, client: ClientSide, view: RequestView, started: int) -> None:
        self.client = client
        self.view = view
        self.started = started  # perf_counter_ns
        self.request_id = request_id_for(view.request_id)
        self.ctx: RequestContext | None = None
        self.is_head = view.method == "HEAD"
        self.body_done = not view.has_body  # the client's body has all arrived
        self.body_seen = 0
        self.buffered: list[bytes] | None = []  # body chunks before the upstream leg is up
        self.reading: bytearray | None = None  # a body read whole (`Route.reads_body`)
        self.head = b""  # the upstream request's head, once the steps let it through
        self.out = b""  # the answer's head, held to go out with its first body bytes
        self.pool: UpstreamPool | None = None
        self.upstream: UpstreamConnection | None = None
        self.upstream_started = 0
        self.deadline = 0.0  # loop time by which the upstream must have answered; 0: none
        self.response_started = False
        self.client_chunked = False
        self.closing = False
        self.finished = False
        self.retried = False
        self.status = 0
        self.code = ""

    # --- the steps -----------------------------------------------------------------------

    def start(self) -> None:
        """Run the steps; forward at once when none had to wait."""
        client, view = self.client, self.view
        edge = client.edge
        try:
            path = normalise_path(view.path)
            own = edge.own_answers.get(path)
            if own is not None:
                own(self)
                return
            ip, ip_text = client.client_address(view)
            ctx = self.ctx = RequestContext(view, self.request_id, path, ip, ip_text,
                                            edge.services)
            ctx.connection = client.state
            match_route(ctx)
            assert ctx.route is not None
            if ctx.route.reads_body:
                self._read_body_whole()
            pending = run_steps(ctx, edge.steps)
        except GatewayError as error:
            self.refuse(error)
            return
        except Exception:
            log.exception("unhandled error in request %s", self.request_id)
            self.refuse(InternalError())
            return
        if pending is None:
            self.forward()
        else:
            edge.run(self._then(pending, self._forward_after))

    def _forward_after(self, _: None) -> None:
        self.forward()

    async def _then(self, pending: Awaitable[T], go: Callable[[T], None]) -> None:
        """The slow path's task: wait for `pending`, then `go` on with its result; a
        `GatewayError` (or a fault) on the way is this request's answer instead."""
        try:
            result = await pending
        except GatewayError as error:
            if not self.finished:
                self.refuse(error)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error in request %s", self.request_id)
            if not self.finished:
                self.refuse(InternalError())
            return
        if not self.finished:
            go(result)

    # --- the upstream leg ----------------------------------------------------------------

    def forward(self) -> None:
        """Send the request upstream: its head now, its body as it arrives."""
        ctx, view, edge = self.ctx, self.view, self.client.edge
        assert ctx is not None and ctx.route is not None
        settings = edge.settings
        if (view.content_length or 0) > settings.max_body_size:
            self.refuse(PayloadTooLarge())
            return
        route = ctx.route
        if ctx.body is None and ctx.body_arrived is not None:
            # Read whole (no step needed it yet): forwarded whole, once it is all there.
            ctx.body_arrived.add_done_callback(self._forward_when_arrived)
            return
        if route.local is not None:
            self._answer_locally(route.local)
            return
        pool = self.pool = edge.pools.get(route.upstream)
        target = ctx.path.encode() if not view.query else ctx.path.encode() + b"?" + view.query
        if ctx.body is not None:  # read whole for the steps: sent as one, unchanged
            framing = b"Content-Length: %d\r\n" % len(ctx.body)
        elif view.is_chunked:
            framing = _CHUNKED
        elif view.content_length is not None:
            framing = b"Content-Length: %d\r\n" % view.content_length
        else:
            framing = b""
        self.head = upstream_request_head(view, target, pool.host_header, ctx.client_ip_text,
                                          self.request_id, ctx.key, settings, framing)
        if view.expects_continue and not self.body_done and view.version == "1.1":
            self.client.write(_CONTINUE)
        self.deadline = edge.loop.time() + (route.timeout or settings.upstream_timeout)
        conn = pool.acquire(self._on_upstream)
        if conn is not None:
            self._on_upstream(conn)

    def _forward_when_arrived(self, arrived: asyncio.Future[bytes]) -> None:
        if not self.finished and not arrived.cancelled():
            self.forward()

    def _on_upstream(self, conn: UpstreamConnection | BaseException) -> None:
        if isinstance(conn, BaseException):
            if not self.finished:
                self._upstream_failed(UpstreamUnavailable(), repr(conn))
            return
        if self.finished:  # the client left, or the deadline passed, while it connected
            assert self.pool is not None
            self.pool.release(conn)
            return
        self.upstream = conn
        self.upstream_started = time.perf_counter_ns()
        buffered, self.buffered = self.buffered, None
        data = self.head
        if buffered:
            data += b"".join(self._framed(chunk) for chunk in buffered)
            self.client.resume(self.client.WAITING)
        body = self.ctx.body if self.ctx is not None else None
        if body is not None:
            data += body  # SECURITY: the bytes the steps checked, and nothing else
        elif self.body_done and self.view.is_chunked:
            data += _LAST_CHUNK
        conn.send(self, data)

    def _framed(self, chunk: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(chunk), chunk) if self.view.is_chunked else chunk

    # --- the client's body -------------------------------------------------------------

    def _read_body_whole(self) -> None:
        """A route whose steps read the body (`Route.reads_body`): it is collected whole,
        within the body limit, for `ctx.body_arrived`; the steps that need no body run
        meanwhile, so a request they refuse never has its body read."""
        ctx, view = self.ctx, self.view
        assert ctx is not None
        if (view.content_length or 0) > self.client.edge.settings.max_body_size:
            raise PayloadTooLarge
        if self.body_done:
            ctx.body = b""
            return
        self.reading = bytearray()
        ctx.body_arrived = self.client.edge.loop.create_future()
        if view.expects_continue and view.version == "1.1":
            self.client.write(_CONTINUE)

    def client_body(self, chunk: bytes) -> None:
        """A piece of the client's body (the parser's `on_body`)."""
        self.body_seen += len(chunk)
        if self.finished:
            return  # refused: what follows is dropped, the connection closes
        if self.body_seen > self.client.edge.settings.max_body_size:
            self._give_up(PayloadTooLarge())
            return
        if self.reading is not None:
            self.reading += chunk
            return
        if self.upstream is not None:
            assert self.upstream.transport is not None
            self.upstream.transport.write(self._framed(chunk))
        elif self.buffered is not None:
            self.buffered.append(chunk)
            if sum(map(len, self.buffered)) > _BUFFERED_MAX:
                self.client.pause(self.client.WAITING)

    def client_body_end(self) -> None:
        """The client's body is all there (the parser's `on_message_complete`)."""
        if self.body_done:
            return
        self.body_done = True
        if self.reading is not None:
            body, self.reading = bytes(self.reading), None
            ctx = self.ctx
            if ctx is not None:
                if ctx.body is None:
                    ctx.body = body
                if ctx.body_arrived is not None and not ctx.body_arrived.done():
                    ctx.body_arrived.set_result(body)
            return
        if self.upstream is not None and self.view.is_chunked and not self.finished:
            assert self.upstream.transport is not None
            self.upstream.transport.write(_LAST_CHUNK)

    def client_body_late(self) -> None:
        """The body did not arrive within the client body deadline."""
        self._give_up(RequestTimeout("The request body did not arrive in time"))

    # --- the upstream's answer (called by `UpstreamConnection`) --------------------------

    def upstream_head(self, head: ResponseHead, eof_framed: bool) -> None:
        client, view = self.client, self.view
        self.status = head.status
        closing = self._is_last()
        if self.is_head or head.status in (204, 304):
            framing = (b"Content-Length: %d\r\n" % head.content_length
                       if head.content_length is not None else b"")
        elif head.content_length is not None and not head.is_chunked:
            framing = b"Content-Length: %d\r\n" % head.content_length
        elif view.version == "1.1":
            framing = _CHUNKED
            self.client_chunked = True
        else:  # an HTTP/1.0 client: the end of the connection ends the answer
            framing, closing = b"", True
        rate = self._rate()
        self.closing = closing
        self.response_started = True
        # Sent with the first body bytes, or when the answer ends: one write, not two, for
        # the usual answer that arrives in one piece.
        self.out = client_response_head(head, self.request_id, rate, framing, closing)
        edge = client.edge
        self.deadline = edge.loop.time() + edge.settings.upstream_total_timeout

    def upstream_body(self, data: bytes) -> None:
        if self.client_chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        if self.out:
            data, self.out = self.out + data, b""
        self.client.write(data)

    def upstream_done(self, reusable: bool) -> None:
        end = _LAST_CHUNK if self.client_chunked else b""
        if self.out or end:
            self.client.write(self.out + end)
            self.out = b""
        conn, self.upstream = self.upstream, None
        if conn is not None and self.pool is not None:
            if reusable and self.body_done:
                self.pool.release(conn)
            else:
                conn.close()
        self._finish()

    def upstream_lost(self, exc: BaseException | None) -> None:
        conn, self.upstream = self.upstream, None
        if self.finished:
            return
        if self.response_started:
            # Headers are gone already: all we can do is cut the client off mid-body, so
            # that a short answer never looks whole.
            log.warning("upstream failed mid-answer for request %s: %r", self.request_id, exc)
            self._count_upstream_error("ABORTED")
            self.client.abort()
            self._finish(client_gone=True)
            return
        if (conn is not None and conn.is_reused and not self.retried and self.body_done
                and not self.view.has_body and self.view.method in _RETRIED_METHODS):
            # A pooled connection the upstream had closed as we reused it: nothing was
            # answered, and the request is safe to send again once.
            self.retried = True
            assert self.pool is not None
            fresh = self.pool.acquire(self._on_upstream)
            if fresh is not None:
                self._on_upstream(fresh)
            return
        self._upstream_failed(UpstreamUnavailable(), repr(exc))

    def upstream_paused(self, is_paused: bool) -> None:
        """The upstream's send buffer filled (or drained): hold (or go on with) the client."""
        if is_paused:
            self.client.pause(self.client.UPSTREAM_FULL)
        else:
            self.client.resume(self.client.UPSTREAM_FULL)

    def client_paused(self, is_paused: bool) -> None:
        """The client's send buffer filled (or drained): hold (or go on with) the upstream."""
        conn = self.upstream
        if conn is not None and conn.transport is not None:
            if is_paused:
                conn.transport.pause_reading()
            else:
                conn.transport.resume_reading()

    # --- deadlines and endings -----------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        """Called by the edge's sweep: give up on an upstream past its deadline."""
        if self.deadline and now >= self.deadline and not self.finished:
            if self.response_started:
                log.warning("request %s: the upstream's answer outlasted its deadline",
                            self.request_id)
                self._count_upstream_error("ABORTED")
                self._abort_upstream()
                self.client.abort()
                self._finish(client_gone=True)
            else:
                self._upstream_failed(UpstreamTimeout(), "no answer in time")

    def _upstream_failed(self, error: GatewayError, why: str) -> None:
        log.warning("upstream %s failed for request %s: %s",
                    self.pool.origin if self.pool else "?", self.request_id, why)
        self._count_upstream_error(error.code)
        self._abort_upstream()
        self.refuse(error)

    def _count_upstream_error(self, code: str) -> None:
        if code == "ABORTED":  # the other codes are counted from the outcome
            route = self.ctx.route if self.ctx is not None else None
            Metrics.get().upstream_errors.labels(
                route.pattern if route is not None else "unmatched", code).inc()

    def _give_up(self, error: GatewayError) -> None:
        """Stop the request half-way (a body too large or too slow)."""
        self._abort_upstream()
        if self.response_started:
            self.client.abort()
            self._finish(client_gone=True)
        else:
            self.refuse(error)

    def _abort_upstream(self) -> None:
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.abort()
        elif self.pool is not None:
            self.pool.cancel(self._on_upstream)

    def refuse(self, error: GatewayError) -> None:
        """Answer with the contract's error instead of the upstream's answer."""
        if self.finished:
            return
        self._abort_upstream()  # a request half-sent must not sit on an upstream connection
        if self.response_started:  # too late for another answer
            self.client.abort()
            self._finish(client_gone=True)
            return
        ctx = self.ctx
        if isinstance(error, KeyInvalid) and ctx is not None:
            guard = ctx.services.guard
            ctx.services.spawn(guard.record_failure(ctx.client_ip_text))
        rate = self._rate()
        self.closing = self._is_last()
        self.status, self.code = error.status, error.code
        self.response_started = True
        self.client.write(error_answer(error, self.request_id, closing=self.closing,
                                       rate=rate))
        self._finish()

    def _answer_locally(self, name: str) -> None:
        """A route the gateway answers itself (`Route.local`), once its steps are through."""
        ctx = self.ctx
        assert ctx is not None
        self.client.edge.run(self._then(LOCAL_ANSWERS[name](ctx), self._send_local))

    def _send_local(self, local: LocalAnswer) -> None:
        headers = [*local.headers, ("X-Request-Id", self.request_id)]
        rate = self._rate()
        if rate is not None:
            headers += [("X-RateLimit-Limit", str(rate[0])),
                        ("X-RateLimit-Remaining", str(rate[1]))]
        self.closing = self._is_last()
        self.status = local.status
        self.response_started = True
        self.client.write(answer_bytes(local.status, local.body, headers, closing=self.closing))
        self._finish()

    def answer(self, data: bytes, status: int) -> None:
        """An answer the gateway makes itself (health, readiness), whole. Not an outcome:
        a load balancer's probes would drown the access log and the request counts."""
        self.status = status
        self.closing = self._is_last()
        self.response_started = True
        self.client.write(data)
        self._finish(recorded=False)

    def client_lost(self) -> None:
        """The client's connection is gone."""
        if self.finished:
            return
        self._abort_upstream()
        if not self.response_started:
            self.status = _CLIENT_GONE
        self._finish(client_gone=True)

    def _rate(self) -> tuple[int, int] | None:
        """The rate-limit headers' figures, once the limit was counted."""
        ctx = self.ctx
        if ctx is None or ctx.rate_limit is None:
            return None
        return ctx.rate_limit, ctx.rate_remaining or 0

    def _is_last(self) -> bool:
        """Whether the connection ends after this answer: what is left of an unread body
        cannot be told from the next request."""
        return not self.body_done or not self.view.keep_alive or self.client.is_closing

    def _finish(self, *, client_gone: bool = False, recorded: bool = True) -> None:
        if self.finished:
            return
        self.finished = True
        ctx = self.ctx
        if ctx is not None and ctx.body_arrived is not None and not ctx.body_arrived.done():
            ctx.body_arrived.cancel()  # a step waiting for a body that will not come
        if ctx is not None and self.upstream_started:
            ctx.upstream_ns = time.perf_counter_ns() - self.upstream_started
        client = self.client
        if recorded:
            client.edge.outcomes.add(ctx, self.view, self.request_id, self.status, self.code,
                                     self.started)
        client.exchange_finished(self, self.closing or client_gone)
