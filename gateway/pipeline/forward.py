"""Step `forward`: stream the request to the upstream and its answer back, unchanged.

Bodies are streamed both ways in chunks, never buffered. Upstream failures are translated
into gateway errors at one boundary (`map_upstream_errors`); once the answer has started
streaming, a failure can only be logged and the client connection aborted.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator

import aiohttp
from aiohttp import hdrs, web
from aiohttp.typedefs import LooseHeaders
from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL

from gateway.http.client_ip import forwarded_for, is_trusted, parse_address
from gateway.http.errors import PayloadTooLarge, UpstreamTimeout, UpstreamUnavailable
from gateway.observability.metrics import Metrics
from gateway.pipeline.context import RequestContext

__all__ = [
    "PassThroughRequest",
    "build_upstream_headers",
    "create_upstream_session",
    "forward",
    "map_upstream_errors",
    "response_headers",
]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024

# RFC 9110 section 7.6.1, plus the old proxy ones.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
})
# SECURITY: never passed upstream: the client's key, identity and routing headers we rebuild,
# and method overrides (the method we checked is the method we send).
_STRIPPED = frozenset({
    "host", "authorization", "forwarded", "x-forwarded-for", "x-forwarded-proto",
    "x-forwarded-host", "x-forwarded-port", "x-real-ip", "x-request-id",
    "x-http-method-override", "x-http-method", "x-method-override", "expect",
})


# Headers aiohttp's client would otherwise add on its own. Content-Type stays out of a body's
# defaults too (the body is the client's bytes, typed by the client's own header).
_NEVER_ADDED: CIMultiDict[None] = CIMultiDict(
    (name, None) for name in (hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.CONTENT_TYPE,
                              hdrs.USER_AGENT))


# The headers `forward` made for the request it is sending, handed to `PassThroughRequest`
# beside the session's `request()` rather than through it: the session would first copy
# them in a Python loop (`ClientSession._prepare_headers`, about 1,500 instructions a header).
# Set and reset around one `request()` call in the handler's task, so no other request sees them.
_OUTGOING: contextvars.ContextVar[CIMultiDict[str] | None] = contextvars.ContextVar(
    "upstream_headers", default=None)


class PassThroughRequest(aiohttp.ClientRequest):
    """aiohttp's client request, sending the headers `build_upstream_headers` made as they are.

    A proxy adds no header the client did not send but its own: none of aiohttp's defaults
    (`Accept: */*` among them). And the headers are taken in one copy, where aiohttp's own
    `update_headers` and `update_auto_headers` walk them in Python a few times over: about
    3,000 instructions per header, paid for every request (two hooks of `ClientRequest`,
    the class a session is given as `request_class`).
    """

    def update_headers(self, headers: LooseHeaders | None) -> None:
        # The headers are ours: hop-by-hop and Host already dropped. Host first, as aiohttp
        # (and RFC 9112's advice) has it.
        self.headers: CIMultiDict[str] = CIMultiDict(
            ((hdrs.HOST, self.url.host_port_subcomponent or ""),))
        outgoing = _OUTGOING.get()
        if outgoing is not None:
            self.headers.extend(outgoing)
        elif headers:
            self.headers.extend(headers)

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = _NEVER_ADDED


def create_upstream_session(connections: int, connect_timeout: float) -> aiohttp.ClientSession:
    """One session per process, keep-alive, made for proxying (see DESIGN.md's pitfalls)."""
    connector = aiohttp.TCPConnector(
        limit=connections, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),  # one client's cookies must not reach another
        auto_decompress=False,  # pass bodies through byte for byte
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        request_class=PassThroughRequest,
    )


_DROPPED_UPSTREAM = HOP_BY_HOP | _STRIPPED

# The names we set, as `istr`: a multidict then need not case-fold them on each insert, and
# aiohttp's client copies the headers twice more on their way to the socket.
_FORWARDED_FOR = istr("X-Forwarded-For")
_FORWARDED_PROTO = istr("X-Forwarded-Proto")
_FORWARDED_HOST = istr("X-Forwarded-Host")
_REQUEST_ID = istr("X-Request-Id")
_ACCOUNT_ID = istr("X-Gateway-Account-Id")
_KEY_ID = istr("X-Gateway-Key-Id")
_PERMISSIONS = istr("X-Gateway-Permissions")
_RATELIMIT_LIMIT = istr("X-RateLimit-Limit")
_RATELIMIT_REMAINING = istr("X-RateLimit-Remaining")


def _dropped(headers: CIMultiDictProxy[str], base: frozenset[str]) -> frozenset[str]:
    """`base` plus the headers the Connection header names as hop-by-hop (RFC 9110 7.6.1)."""
    named = headers.getall(hdrs.CONNECTION, ())
    return _plus_named(base, tuple(named)) if named else base


@functools.lru_cache(maxsize=256)  # the same few values ("keep-alive") over and over
def _plus_named(base: frozenset[str], connection: tuple[str, ...]) -> frozenset[str]:
    return base | {t.strip().lower() for value in connection for t in value.split(",")}


_TIMEOUTS: dict[tuple[float, float], aiohttp.ClientTimeout] = {}


def _timeout(connect: float, read: float) -> aiohttp.ClientTimeout:
    """One (immutable) ClientTimeout per distinct pair, not one per request."""
    timeout = _TIMEOUTS.get((connect, read))
    if timeout is None:
        timeout = _TIMEOUTS[(connect, read)] = aiohttp.ClientTimeout(
            total=None, sock_connect=connect, sock_read=read)
    return timeout


@functools.lru_cache(maxsize=4096)  # the same endpoints over and over; a URL is immutable
def _upstream_url(origin: str, path: str) -> URL:
    return URL(f"{origin}{path}", encoded=True)


@functools.lru_cache(maxsize=4096)  # keys in use repeat; made once, added in one call
def _key_headers(key_id: str, account_id: int,
                 permissions: frozenset[str]) -> tuple[tuple[istr, str], ...]:
    return ((_ACCOUNT_ID, str(account_id)), (_KEY_ID, key_id),
            (_PERMISSIONS, ",".join(sorted(permissions))))


def build_upstream_headers(ctx: RequestContext) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop, key and `X-Gateway-*`, plus ours."""
    request = ctx.request
    services = ctx.services
    incoming = request.headers
    dropped = _dropped(incoming, _DROPPED_UPSTREAM)
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if lower in dropped or lower.startswith("x-gateway-"):
            continue
        headers.add(name, value)

    # SECURITY: X-Forwarded-* are rebuilt, extended only when the peer is a trusted proxy.
    trusted = services.settings.trusted_proxies
    peer = parse_address(request.remote or "") if trusted else None
    proxy = peer[1] if peer is not None and is_trusted(peer[0], trusted) else None
    trusted_peer = proxy is not None
    if proxy is not None:
        chain = forwarded_for(incoming.getall(_FORWARDED_FOR, ()))
        headers[_FORWARDED_FOR] = ", ".join([*chain, proxy])
    else:  # the peer is the client
        headers[_FORWARDED_FOR] = ctx.client_ip_text
    proto = incoming.get(_FORWARDED_PROTO) if trusted_peer else None
    headers[_FORWARDED_PROTO] = proto or request.scheme
    host = (incoming.get(_FORWARDED_HOST) if trusted_peer else None) or incoming.get(hdrs.HOST)
    if host:
        headers[_FORWARDED_HOST] = host
    headers[_REQUEST_ID] = ctx.request_id
    key = ctx.key
    if key is not None:  # any X-Gateway-* the client sent was dropped above
        headers.extend(_key_headers(key.key_id, key.account_id, key.permissions))
    if services.settings.upstream_secret:
        headers[services.settings.upstream_secret_header] = services.settings.upstream_secret
    return headers


def response_headers(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream's headers minus hop-by-hop ones (the server frames the body itself)."""
    # One copy in C, then the few hop-by-hop names out: a third of a filtered copy's cost.
    headers = CIMultiDict(incoming)
    for name in _dropped(incoming, HOP_BY_HOP):
        if name in headers:
            del headers[name]  # every value of it
    return headers


@contextlib.contextmanager
def map_upstream_errors() -> Iterator[None]:
    """aiohttp's client errors as the contract's 502 / 504."""
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable from exc


class _LimitedBody:
    """The request body in chunks; stops a body that grows past `limit` (chunked uploads)."""

    __slots__ = ("exceeded", "limit", "request")

    def __init__(self, request: web.Request, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.exceeded = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.request.content.iter_chunked(_CHUNK):
            seen += len(chunk)
            if seen > self.limit:
                self.exceeded = True
                raise PayloadTooLarge
            yield chunk


async def forward(ctx: RequestContext) -> web.StreamResponse:
    """Reads `ctx.route`, `ctx.path`, `ctx.key`. Returns the streamed upstream answer.

    Raises `PayloadTooLarge`, `UpstreamUnavailable` (502), `UpstreamTimeout` (504). Never
    retries: for POST and DELETE the outcome of a failed attempt is unknown.
    """
    request, route, services = ctx.request, ctx.route, ctx.services
    assert route is not None
    settings = services.settings
    length = request.content_length
    if length is not None and length > settings.max_body_size:
        raise PayloadTooLarge
    # The query exactly as the client sent it; the URL is not re-quoted on the way out.
    query = request.raw_path.partition("?")[2]
    url = (URL(f"{route.upstream}{ctx.path}?{query}", encoded=True) if query
           else _upstream_url(route.upstream, ctx.path))
    body = _LimitedBody(request, settings.max_body_size) if request.body_exists else None
    timeout = _timeout(settings.upstream_connect_timeout,
                       route.timeout or settings.upstream_timeout)
    outgoing = _OUTGOING.set(build_upstream_headers(ctx))
    started = time.perf_counter_ns()
    try:
        with map_upstream_errors():
            upstream = await services.session.request(
                request.method, url, data=body.__aiter__() if body is not None else None,
                allow_redirects=False, timeout=timeout,
            )
    except (UpstreamUnavailable, UpstreamTimeout):
        ctx.upstream_ns = time.perf_counter_ns() - started  # failures are timed too
        if body is not None and body.exceeded:
            raise PayloadTooLarge from None
        raise
    finally:
        _OUTGOING.reset(outgoing)
    try:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=response_headers(upstream.headers))
        _decorate(ctx, response)
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:
            # The client hung up (before or while we answered): nothing is wrong here.
            log.debug("client of request %s went away mid-answer", ctx.request_id)
            return response
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Headers are gone already: all we can do is cut the client off mid-body.
            log.warning("upstream failed mid-body for request %s: %r", ctx.request_id, exc)
            Metrics.get().upstream_errors.labels(route.pattern, "ABORTED").inc()
            if request.transport is not None:
                request.transport.abort()
        return response
    finally:
        ctx.upstream_ns = time.perf_counter_ns() - started
        upstream.release()


def _decorate(ctx: RequestContext, response: web.StreamResponse) -> None:
    """The gateway's own response headers."""
    response.headers[_REQUEST_ID] = ctx.request_id
    if ctx.rate_limit is not None:
        response.headers[_RATELIMIT_LIMIT] = str(ctx.rate_limit)
        response.headers[_RATELIMIT_REMAINING] = str(ctx.rate_remaining)
