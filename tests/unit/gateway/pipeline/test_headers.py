"""What crosses the gateway in each direction (gateway/pipeline/headers.py): pure, no I/O."""

from __future__ import annotations

import ipaddress

import httptools
import pytest

from gateway.config.settings import Settings
from gateway.http.errors import MalformedRequest
from gateway.http.request import RequestView
from gateway.pipeline.headers import (
    ResponseHead,
    client_response_head,
    read_headers,
    read_response_headers,
    upstream_request_head,
)


def _view(*headers: tuple[bytes, bytes], peer: str = "203.0.113.5") -> RequestView:
    view = RequestView("GET", b"/public/v1/time", peer, "http")
    read_headers(view, headers)
    return view


def _sent(view: RequestView, settings: Settings | None = None) -> dict[str, list[str]]:
    """The upstream request head, read back as the upstream's parser reads it."""
    head = upstream_request_head(view, b"/public/v1/time", b"up.example:9000",
                                 "203.0.113.5", "rid-1", None, settings or Settings(), b"")
    seen: dict[str, list[str]] = {}

    class Reader:
        def on_header(self, name: bytes, value: bytes) -> None:
            seen.setdefault(name.decode().lower(), []).append(value.decode())

    httptools.HttpRequestParser(Reader()).feed_data(head)
    return seen


@pytest.mark.parametrize("name", [
    b"X_Gateway_Account_Id", b"X-GATEWAY_ACCOUNT-ID", b"x-gateway-account-id",
    b"X-Gateway-Key-Id", b"X-GATEWAY-PERMISSIONS", b"X_Forwarded_For", b"X-Forwarded-Prefix",
    b"X-Forwarded-Server", b"X-Forwarded-Port", b"X-Original-URL", b"X-Rewrite-URL",
    b"X-Real-IP", b"Forwarded", b"X-HTTP-Method-Override", b"X-Method-Override",
    b"Proxy-Authorization", b"Keep-Alive", b"TE", b"Trailer", b"Authorization_",
    b"X-Gateway-Secret",
])
def test_identity_routing_and_hop_by_hop_headers_never_travel(name: bytes) -> None:
    view = _view((name, b"999"), (b"Host", b"gw"), (b"X-Custom", b"kept"))
    sent = _sent(view)
    assert name.decode().lower() not in sent
    assert all(value != ["999"] for value in sent.values()), sent
    assert sent["x-custom"] == ["kept"]


def test_the_gateways_own_headers_are_rebuilt_once_each() -> None:
    view = _view((b"Host", b"gw.example"), (b"X-Forwarded-For", b"10.9.9.9"),
                 (b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Host", b"evil"),
                 (b"X-Request-Id", b"client-id"))
    sent = _sent(view)
    assert sent["x-forwarded-for"] == ["203.0.113.5"]  # SECURITY: not the client's claim
    assert sent["x-forwarded-proto"] == ["http"]
    assert sent["x-forwarded-host"] == ["gw.example"]
    assert sent["x-request-id"] == ["rid-1"]
    assert sent["host"] == ["up.example:9000"]


def test_behind_a_trusted_proxy_its_chain_is_extended() -> None:
    settings = Settings(trusted_proxies=(ipaddress.ip_network("10.0.0.2/32"),))
    view = _view((b"Host", b"gw"), (b"X-Forwarded-For", b"198.51.100.7"),
                 (b"X-Forwarded-Proto", b"https"), peer="10.0.0.2")
    sent = _sent(view, settings)
    assert sent["x-forwarded-for"] == ["198.51.100.7, 10.0.0.2"]
    assert sent["x-forwarded-proto"] == ["https"]


def test_headers_the_connection_header_names_are_dropped() -> None:
    view = _view((b"Host", b"gw"), (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"s"),
                 (b"x-hop", b"t"), (b"X-Kept", b"k"))
    assert [name for name, _ in view.headers] == [b"X-Kept"]


def test_what_the_gateway_reads_itself() -> None:
    view = _view((b"Host", b"gw"), (b"Authorization", b"Bearer a"),
                 (b"authorization", b"Bearer b"), (b"Expect", b"100-Continue"),
                 (b"Content-Length", b"12"), (b"Upgrade", b"h2c"))
    assert view.authorization == ["Bearer a", "Bearer b"]  # both: two keys are refused
    assert view.expects_continue and view.content_length == 12 and view.upgrade == b"h2c"
    assert view.headers == []


@pytest.mark.parametrize("headers", [
    ((b"Host", b"a"), (b"Host", b"b")),
    ((b"Host", b"a"), (b"host", b"a")),
    ((b"Host", b"a"), (b"Transfer-Encoding", b"gzip, chunked")),
    ((b"Host", b"a"), (b"Transfer-Encoding", b"identity")),
])
def test_requests_that_read_two_ways_are_refused(headers: tuple[tuple[bytes, bytes], ...]
                                                 ) -> None:
    with pytest.raises(MalformedRequest):
        _view(*headers)


def _head(*pairs: tuple[bytes, bytes]) -> ResponseHead:
    head = ResponseHead()
    head.status, head.reason = 200, b"OK"
    read_response_headers(head, pairs)
    return head


def test_hop_by_hop_and_connection_named_response_headers_are_dropped_the_rest_kept() -> None:
    head = _head((b"Server", b"nginx"), (b"Connection", b"keep-alive, X-Hop"),
                 (b"Set-Cookie", b"a=1"), (b"x-hop", b"internal"), (b"Keep-Alive", b"t=5"),
                 (b"Set-Cookie", b"b=2"), (b"Transfer-Encoding", b"chunked"),
                 (b"Retry-After", b"7"), (b"X-Request-Id", b"theirs"))
    data = client_response_head(head, "ours", None, b"Content-Length: 0\r\n", False)
    assert data == (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nSet-Cookie: a=1\r\n"
                    b"Set-Cookie: b=2\r\nRetry-After: 7\r\nX-Request-Id: ours\r\n"
                    b"Content-Length: 0\r\n\r\n")
    assert head.is_chunked and head.keeps_alive


def test_the_gateways_rate_headers_replace_the_upstreams_only_when_it_counts() -> None:
    head = _head((b"X-RateLimit-Limit", b"9"), (b"Connection", b"close"))
    assert not head.keeps_alive
    ours = client_response_head(head, "r", (200, 3), b"", True)
    assert b"X-RateLimit-Limit: 9" not in ours and b"X-RateLimit-Limit: 200" in ours
    assert ours.endswith(b"Connection: close\r\n\r\n")
    theirs = client_response_head(head, "r", None, b"", False)
    assert b"X-RateLimit-Limit: 9" in theirs
