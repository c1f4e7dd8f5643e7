"""What of the client's headers reaches the upstream, what of the upstream's reaches the client,
and the headers the gateway adds on each leg.

Header names are compared as an upstream's framework may read them: case-folded, with `_`
read as `-` (CGI/WSGI servers merge the two). So a name with an underscore is dropped outright,
as nginx does by default: `X_Gateway_Account_Id` would otherwise name the account.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from gateway.config.settings import Settings
from gateway.http.client_ip import is_trusted, parse_address
from gateway.http.errors import MalformedRequest
from gateway.http.request import RequestView
from gateway.store.base import KeyRecord

__all__ = [
    "HOP_BY_HOP",
    "ResponseHead",
    "client_response_head",
    "read_headers",
    "read_response_headers",
    "upstream_request_head",
]

# RFC 9110 section 7.6.1, plus the old proxy ones.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})

# How the header pass treats a (case-folded) name it reads itself.
_AUTHORIZATION, _HOST, _REQUEST_ID, _XFF, _XFP, _XFH, _CONNECTION, _EXPECT, _LENGTH, \
    _TRANSFER, _UPGRADE, _DROP = range(12)
_READ: dict[bytes, int] = {
    b"authorization": _AUTHORIZATION,
    b"host": _HOST,
    b"x-request-id": _REQUEST_ID,
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFP,
    b"x-forwarded-host": _XFH,
    b"connection": _CONNECTION,
    b"expect": _EXPECT,
    b"content-length": _LENGTH,
    b"transfer-encoding": _TRANSFER,
    b"upgrade": _UPGRADE,
    # SECURITY: never passed upstream: hop-by-hop headers, identity and routing headers that
    # the gateway rebuilds or that would let a client pick another path than the one checked,
    # and method overrides (the method we checked is the method we send).
    **{name: _DROP for name in HOP_BY_HOP - {b"connection", b"transfer-encoding", b"upgrade"}},
    **{name: _DROP for name in (
        b"forwarded", b"x-real-ip", b"x-original-url", b"x-rewrite-url",
        b"x-http-method-override", b"x-http-method", b"x-method-override", b"x-original-method",
    )},
}
# SECURITY: prefixes of names the gateway alone may set upstream.
_DROPPED_PREFIXES = (b"x-gateway-", b"x-forwarded-")


def read_headers(view: RequestView, raw: Iterable[tuple[bytes, bytes]]) -> None:
    """Sort the client's headers into what the gateway reads and what may travel upstream.

    Raises `MalformedRequest` for a request that could be read two ways: two Host headers, or
    a Transfer-Encoding other than plain `chunked` (the parser has refused the other forms
    already: Content-Length twice or beside Transfer-Encoding, bare LF, obs-fold).
    """
    kept = view.headers
    named: list[bytes] | None = None
    for name, value in raw:
        key = name.lower()
        if b"_" in key:  # SECURITY: read as '-' by CGI/WSGI servers; never forwarded
            continue
        kind = _READ.get(key)
        if kind is None:
            if not key.startswith(_DROPPED_PREFIXES):
                kept.append((name, value))
        elif kind == _AUTHORIZATION:
            view.authorization.append(value.decode("latin-1"))
        elif kind == _HOST:
            if view.host is not None:
                raise MalformedRequest("The request has more than one Host header")
            view.host = value
        elif kind == _REQUEST_ID:
            if view.request_id is None:
                view.request_id = value.decode("latin-1")
        elif kind == _XFF:
            view.forwarded_for.append(value)
        elif kind == _XFP:
            view.forwarded_proto = view.forwarded_proto or value
        elif kind == _XFH:
            view.forwarded_host = view.forwarded_host or value
        elif kind == _CONNECTION:
            named = (named or []) + [t.strip() for t in value.lower().split(b",") if t.strip()]
        elif kind == _EXPECT:
            view.expects_continue = value.strip().lower() == b"100-continue"
        elif kind == _LENGTH:
            view.content_length = int(value)  # digits only: the parser checked it
        elif kind == _TRANSFER:
            if value.strip().lower() != b"chunked":
                raise MalformedRequest("Transfer-Encoding other than chunked is not accepted")
            view.is_chunked = True
        elif kind == _UPGRADE:
            view.upgrade = value
    view.has_body = view.is_chunked or bool(view.content_length)
    if named:
        # Headers the client's Connection header names are hop-by-hop too (RFC 9110 7.6.1).
        dropped = set(named) - {b"close", b"keep-alive", b"upgrade"}
        if dropped:
            view.headers = [(n, v) for n, v in kept if n.lower() not in dropped]


@functools.lru_cache(maxsize=4096)  # keys in use repeat; made once per key record
def _key_headers(key_id: str, account_id: int, permissions: frozenset[str]) -> bytes:
    return (f"X-Gateway-Account-Id: {account_id}\r\nX-Gateway-Key-Id: {key_id}\r\n"
            f"X-Gateway-Permissions: {','.join(sorted(permissions))}\r\n").encode()


def _forwarded_headers(view: RequestView, client_ip: str, settings: Settings) -> bytes:
    """`X-Forwarded-For`/`-Proto`/`-Host`, rebuilt; extended only behind a trusted proxy."""
    trusted = settings.trusted_proxies
    peer = parse_address(view.peer) if trusted else None
    if peer is not None and is_trusted(peer[0], trusted):
        chain = [part.strip() for header in view.forwarded_for
                 for part in header.decode("latin-1").split(",") if part.strip()]
        chain.append(peer[1])
        proto = view.forwarded_proto or view.scheme.encode()
        host = view.forwarded_host or view.host
        forwarded_for = ", ".join(chain).encode("latin-1")
    else:  # SECURITY: the peer is the client; what it claims is not repeated
        proto, host, forwarded_for = view.scheme.encode(), view.host, client_ip.encode()
    head = b"X-Forwarded-For: " + forwarded_for + b"\r\nX-Forwarded-Proto: " + proto + b"\r\n"
    if host:
        head += b"X-Forwarded-Host: " + host + b"\r\n"
    return head


def upstream_request_head(view: RequestView, target: bytes, upstream_host: bytes,
                          client_ip: str, request_id: str, key: KeyRecord | None,
                          settings: Settings, framing: bytes) -> bytes:
    """The request line and headers sent upstream: the client's kept headers in their order,
    then the gateway's own, then `framing` (the body's Content-Length or chunked coding)."""
    parts = [view.method.encode(), b" ", target, b" HTTP/1.1\r\nHost: ", upstream_host, b"\r\n"]
    for name, value in view.headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(_forwarded_headers(view, client_ip, settings))
    parts += (b"X-Request-Id: ", request_id.encode(), b"\r\n")
    if key is not None:  # any X-Gateway-* the client sent was dropped by `read_headers`
        parts.append(_key_headers(key.key_id, key.account_id, key.permissions))
    if settings.upstream_secret:
        parts.append(f"{settings.upstream_secret_header}: {settings.upstream_secret}\r\n"
                     .encode())
    parts += (framing, b"\r\n")
    return b"".join(parts)


class ResponseHead:
    """The upstream's status and the headers of its answer that reach the client."""

    __slots__ = ("content_length", "has_rate_headers", "headers", "is_chunked", "keeps_alive",
                 "named", "reason", "status")

    def __init__(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.is_chunked = False
        self.keeps_alive = True
        self.named: list[bytes] | None = None  # what its Connection header names
        self.has_rate_headers = False  # X-RateLimit-* of its own


# Headers of the upstream's answer the gateway sets itself, or that frame the body.
_RESPONSE_OWN = HOP_BY_HOP | {b"content-length", b"x-request-id"}


def read_response_headers(head: ResponseHead, raw: Iterable[tuple[bytes, bytes]]) -> None:
    """The upstream's headers: the end-to-end ones kept in order, framing and `Connection`
    read (the parser's `on_header` only collects them: one pass here is cheaper)."""
    kept = head.headers
    for name, value in raw:
        key = name.lower()
        if key not in _RESPONSE_OWN:
            kept.append((name, value))
            if key.startswith(b"x-ratelimit-"):
                head.has_rate_headers = True
        elif key == b"content-length":
            head.content_length = int(value)
        elif key == b"transfer-encoding":
            head.is_chunked = value.strip().lower().endswith(b"chunked")
        elif key == b"connection":
            tokens = [t.strip() for t in value.lower().split(b",")]
            if b"close" in tokens:
                head.keeps_alive = False
            head.named = [t for t in tokens if t not in (b"close", b"keep-alive")] or None


_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


def client_response_head(head: ResponseHead, request_id: str, rate: tuple[int, int] | None,
                         framing: bytes, closing: bool) -> bytes:
    """The answer's head as the client gets it: the upstream's status and end-to-end headers,
    the gateway's request id and rate-limit headers, and the edge's own framing."""
    line = _STATUS_LINES.get((head.status, head.reason))
    if line is None:
        if len(_STATUS_LINES) > 256:
            _STATUS_LINES.clear()
        line = _STATUS_LINES[(head.status, head.reason)] = (
            b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason))
    parts = [line]
    headers = head.headers
    if head.named:
        named = set(head.named)
        headers = [(n, v) for n, v in headers if n.lower() not in named]
    if rate is not None and head.has_rate_headers:  # ours replace the upstream's
        headers = [(n, v) for n, v in headers
                   if not n.lower().startswith(b"x-ratelimit-")]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"X-Request-Id: ", request_id.encode(), b"\r\n")
    if rate is not None:
        parts.append(b"X-RateLimit-Limit: %d\r\nX-RateLimit-Remaining: %d\r\n" % rate)
    parts.append(framing)
    if closing:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
