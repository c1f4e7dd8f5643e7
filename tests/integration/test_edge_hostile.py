"""Needs: PostgreSQL and Redis (tests/conftest.py). Hostile requests against the real gateway in
front of an upstream that records every byte it is sent.

For each case: the client's answer (status, the contract's JSON error, X-Request-Id), and what
reached the upstream: nothing at all for a request the gateway refused, and for one it let
through exactly one whole request, on the path that was matched, with none of the headers the
gateway must drop. Advisories of other HTTP stacks are ported as cases; each names its id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio

from gateway.config.settings import Settings
from gateway.observability.outcomes import Outcome
from tests.support.edgestack import edge_settings as edge_settings_for
from tests.support.rawclient import Answer, Reply, converse, error_of, open_raw
from tests.support.recording import ParsedRequest, RecordingUpstream, parse_requests
from tests.support.servers import IssuedKey, RunningGateway, issue_key, start_gateway

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0
SLACK = 1.0  # the sweep's tick and a busy machine

TIME = b"/public/v1/time"
FEES = b"/public/v1/fees"
ORDERS = b"/public/v1/account/orders"
BALANCES = b"/public/v1/account/balances"


# --- the servers ---------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstream() -> AsyncIterator[RecordingUpstream]:
    server = RecordingUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def edge_settings(database_url: str, redis_url: str, upstream: RecordingUpstream,
                  tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return edge_settings_for(
        database_url, redis_url, upstream.url, tmp_path_factory.mktemp("edge"),
        client_header_timeout=HEADER_TIMEOUT, client_body_timeout=BODY_TIMEOUT,
        client_timeout=IDLE_TIMEOUT)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(edge_settings: Settings) -> AsyncIterator[RunningGateway]:
    running = await start_gateway(edge_settings)
    yield running
    await running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def key(gateway: RunningGateway, edge_settings: Settings,
              database_url: str) -> AsyncIterator[IssuedKey]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    issued = await issue_key(pool, edge_settings, ["read", "trade", "withdraw"])
    await pool.close()
    # Warm the gateway's key cache: the cases then take the synchronous path, where the
    # upstream leg starts while the client's bytes are still being read.
    reply = await converse(gateway.port, b"GET /public/v1/account/balances HTTP/1.1\r\n"
                           b"Host: x\r\nAuthorization: Bearer " + issued.token.encode()
                           + b"\r\n\r\n")
    assert reply.statuses == [200], reply
    yield issued


@pytest.fixture(autouse=True)
def fresh_record(upstream: RecordingUpstream) -> Iterator[None]:
    upstream.hold = False
    upstream.mark()
    yield
    upstream.hold = False


@pytest.fixture
def outcomes(gateway: RunningGateway) -> Iterator[list[Outcome]]:
    """The outcomes the gateway records from now on (what was matched, per request id)."""
    seen: list[Outcome] = []
    gateway.services.outcomes.drain()  # the earlier tests' requests are not ours
    readers = gateway.services.outcomes.readers
    readers.append(seen.extend)
    yield seen
    readers.remove(seen.extend)


def auth(key: IssuedKey) -> bytes:
    return b"Authorization: Bearer " + key.token.encode() + b"\r\n"


def get(path: bytes, *extra: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(extra) + b"\r\n"


# --- what is asserted ----------------------------------------------------------------------

# Client headers that must never reach the upstream, whatever their case.
_NEVER = {
    b"x-original-url", b"x-rewrite-url", b"forwarded", b"x-real-ip", b"x-http-method-override",
    b"x-http-method", b"x-method-override", b"x-original-method", b"proxy-authorization",
    b"proxy-connection", b"keep-alive", b"te", b"trailer", b"upgrade", b"connection",
    b"authorization", b"expect", b"http2-settings",
}
_GATEWAY_OWN = {b"x-gateway-account-id", b"x-gateway-key-id", b"x-gateway-permissions"}
_FORWARDED_OWN = {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}


def assert_clean(request: ParsedRequest, key: IssuedKey | None = None) -> None:
    """What the gateway sends upstream carries only headers it allows or sets itself."""
    names = request.header_names()
    assert not [n for n in names if b"_" in n], names
    assert not _NEVER & set(names), names
    assert names.count(b"host") == 1, names
    assert names.count(b"x-request-id") == 1, names
    for name in names:
        if name.startswith(b"x-gateway-"):
            assert name in _GATEWAY_OWN, name
        if name.startswith(b"x-forwarded-"):
            assert name in _FORWARDED_OWN, name
        assert names.count(name) == 1 or name not in _GATEWAY_OWN | _FORWARDED_OWN, names
    assert request.values(b"x-forwarded-for") == [b"127.0.0.1"], request.headers
    assert request.values(b"x-forwarded-proto") == [b"http"], request.headers
    if key is not None:
        assert request.values(b"x-gateway-key-id") == [key.key_id.encode()]
    else:
        assert not _GATEWAY_OWN & set(names), names
    framing = [n for n in names if n in (b"content-length", b"transfer-encoding")]
    assert len(framing) <= 1, names


async def nothing_reached(upstream: RecordingUpstream) -> None:
    """Not a byte of the request reached the upstream (looked at after a moment: a request
    refused while its upstream leg was being set up must not be sent late)."""
    await asyncio.sleep(0.05)
    assert upstream.received() == [], upstream.received()


async def no_whole_request(upstream: RecordingUpstream) -> None:
    """The upstream may have seen the start of a request the gateway then refused, but never
    a whole one, and every connection that carried such a start has been closed: a half-sent
    request left on an open connection holds it (and could be finished by other bytes)."""
    for data in upstream.received():
        assert parse_requests(data).requests == [], data
    carried = upstream.carrying()
    closed = await upstream.wait_for(lambda: all(not c.is_open for c in carried), 1.0)
    assert closed, "an upstream connection still holds a half-sent request"


async def pooled(gateway: RunningGateway, upstream: RecordingUpstream) -> None:
    """Leave an idle upstream connection in the gateway's pool, so the next request's head
    goes upstream at once (the case where a refusal must cut the upstream leg)."""
    reply = await converse(gateway.port, get(TIME))
    assert reply.statuses == [200], reply
    upstream.mark()


def refused(reply: Reply, status: int, code: str, *, closes: bool = True) -> Answer:
    """One answer, the contract's error; with `closes`, the gateway then closed."""
    assert reply.error is None, reply
    assert len(reply.answers) == 1, reply
    answer = reply.answers[0]
    assert answer.status == status, reply
    assert error_of(answer)["error"] == code, answer.body
    if closes:
        assert answer.closes, answer.headers
        assert reply.closed, "the connection stayed open after an unreadable request"
    return answer


def forwarded_once(upstream: RecordingUpstream, method: str, path: bytes,
                   key: IssuedKey | None = None) -> ParsedRequest:
    requests = upstream.requests()
    assert len(requests) == 1, requests
    request = requests[0]
    assert (request.method, request.path) == (method, path), request
    assert_clean(request, key)
    return request


# --- request smuggling: two framings, obfuscated framings -----------------------------------

_SMUGGLED = b"GET /public/v1/fees HTTP/1.1\r\nHost: smuggled\r\n\r\n"


def post(framing: bytes, body: bytes, key_header: bytes = b"{A}") -> bytes:
    return (b"POST /public/v1/account/orders HTTP/1.1\r\nHost: x\r\n" + key_header + framing
            + b"\r\n" + body)


UNREADABLE_FRAMINGS = [
    pytest.param(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\nX",
                 id="CL.TE"),
    pytest.param(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                 b"8\r\nSMUGGLED\r\n0\r\n\r\n", id="TE.CL"),
    # llhttp CVE-2022-32213: Transfer-Encoding values read leniently.
    pytest.param(b"Transfer-Encoding: chunked, identity\r\n", b"5\r\nhello\r\n0\r\n\r\n",
                 id="TE-chunked-identity-CVE-2022-32213"),
    pytest.param(b"Transfer-Encoding: identity, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n",
                 id="TE-identity-chunked"),
    pytest.param(b"Transfer-Encoding: chunked, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n",
                 id="TE-chunked-chunked"),
    pytest.param(b"Transfer-Encoding: gzip, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n",
                 id="TE-gzip-chunked"),
    pytest.param(b"Transfer-Encoding: chunked,\r\n", b"5\r\nhello\r\n0\r\n\r\n",
                 id="TE-trailing-comma"),
    pytest.param(b'Transfer-Encoding: "chunked"\r\n', b"5\r\nhello\r\n0\r\n\r\n",
                 id="TE-quoted"),
    pytest.param(b"Transfer-Encoding:\r\n", b"", id="TE-empty"),
    # llhttp CVE-2021-22959: a space between the header name and the colon.
    pytest.param(b"Transfer-Encoding : chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n",
                 id="TE-space-before-colon-CVE-2021-22959"),
    # aiohttp GHSA-xx9p-xxvh-7g8j (CVE-2023-47641): `chunked123` read as chunked beside a CL.
    pytest.param(b"Transfer-Encoding: chunked123\r\nContent-Length: 5\r\n", b"hello",
                 id="TE-chunked123-GHSA-xx9p-xxvh-7g8j"),
    pytest.param(b"Transfer-Encoding: xchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n",
                 id="TE-xchunked"),
    # llhttp CVE-2020-8287: two Transfer-Encoding header fields.
    pytest.param(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                 b"5\r\nhello\r\n0\r\n\r\n", id="TE-twice-CVE-2020-8287"),
    pytest.param(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                 b"5\r\nhello\r\n0\r\n\r\n", id="TE-twice-different"),
    # llhttp CVE-2022-32215: a Transfer-Encoding folded over two lines (obs-fold).
    pytest.param(b"Transfer-Encoding: chunked\r\n , identity\r\n", b"5\r\nhello\r\n0\r\n\r\n",
                 id="TE-obs-fold-CVE-2022-32215"),
    pytest.param(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello", id="CL-twice-equal"),
    pytest.param(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!",
                 id="CL-twice-different"),
    pytest.param(b"Content-Length: 5, 5\r\n", b"hello", id="CL-list"),
    pytest.param(b"Content-Length: +5\r\n", b"hello", id="CL-plus"),
    pytest.param(b"Content-Length: 5 5\r\n", b"hello", id="CL-inner-space"),
    pytest.param(b"Content-Length: 0x10\r\n", b"hellohellohelloh", id="CL-hex"),
    pytest.param(b"Content-Length: -1\r\n", b"hello", id="CL-negative"),
    pytest.param(b"Content-Length: 5.0\r\n", b"hello", id="CL-decimal"),
    pytest.param(b"Content-Length: 99999999999999999999999\r\n", b"hello", id="CL-overflow"),
    # GHSA-gfw2-4jvh-wgfg (aiohttp CVE-2023-47627): lenient framing header values.
    pytest.param(b"Content-Length: \xd9\xa5\r\n", b"hello",
                 id="CL-unicode-digit-GHSA-gfw2-4jvh-wgfg"),
]


@pytest.mark.parametrize(("framing", "body"), UNREADABLE_FRAMINGS)
async def test_ambiguous_framing_is_refused_and_nothing_is_forwarded(
        gateway: RunningGateway, upstream: RecordingUpstream, key: IssuedKey,
        framing: bytes, body: bytes) -> None:
    """A body that two readers could frame two ways is refused before a byte goes upstream,
    and the connection closes: what follows cannot be told from a request of its own."""
    raw = post(framing, body).replace(b"{A}", auth(key)) + _SMUGGLED
    reply = await converse(gateway.port, raw)
    refused(reply, 400, "ILLEGAL_CHARS")
    await nothing_reached(upstream)


READABLE_FRAMINGS = [
    pytest.param(b"Transfer-Encoding:\tchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n", id="TE-tab"),
    pytest.param(b"Transfer-Encoding: CHUNKED\r\n", b"5\r\nhello\r\n0\r\n\r\n", id="TE-upper"),
    pytest.param(b"Transfer-Encoding: chunked \r\n", b"5\r\nhello\r\n0\r\n\r\n",
                 id="TE-trailing-space"),
    pytest.param(b"Content-Length: 5 \r\n", b"hello", id="CL-trailing-space"),
    pytest.param(b"Content-Length: 005\r\n", b"hello", id="CL-leading-zeros"),
    pytest.param(b"Transfer-Encoding: chunked\r\n", b"5;a=b\r\nhello\r\n0\r\n\r\n",
                 id="chunk-extension"),
    pytest.param(b"Transfer-Encoding: chunked\r\n", b'5;a="b\\"c";d\r\nhello\r\n0\r\n\r\n',
                 id="chunk-extension-quoted"),
    pytest.param(b"Transfer-Encoding: chunked\r\n", b"0000000005\r\nhello\r\n0\r\n\r\n",
                 id="chunk-size-leading-zeros"),
    pytest.param(b"Transfer-Encoding: chunked\r\n",
                 b"2\r\nhe\r\n3\r\nllo\r\n0\r\nX-Trailer: 1\r\n\r\n", id="trailer"),
    pytest.param(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0;ext=1\r\n\r\n",
                 id="last-chunk-extension"),
]


@pytest.mark.parametrize(("framing", "body"), READABLE_FRAMINGS)
async def test_one_reading_framings_are_forwarded_reframed(
        gateway: RunningGateway, upstream: RecordingUpstream, key: IssuedKey,
        framing: bytes, body: bytes) -> None:
    """Framings with one reading only pass, re-framed by the gateway: the upstream gets the
    body and nothing of the client's chunk extensions or trailers; the request behind it is
    read as a request of its own, after the first."""
    raw = post(framing, body).replace(b"{A}", auth(key)) + get(FEES)
    reply = await converse(gateway.port, raw, answers=2)
    assert reply.statuses == [200, 200], reply
    requests = upstream.requests()
    assert [(r.method, r.path) for r in requests] == [("POST", ORDERS), ("GET", FEES)]
    assert requests[0].body == b"hello"
    assert_clean(requests[0], key)
    assert_clean(requests[1])
    sent = b"".join(upstream.received())
    assert b"a=b" not in sent and b"X-Trailer" not in sent and b"ext=1" not in sent


# --- bytes a strict HTTP/1.1 reader refuses -------------------------------------------------

UNREADABLE_HEADS = [
    # llhttp CVE-2022-32214: a bare LF as a line end.
    pytest.param(b"GET /public/v1/time HTTP/1.1\nHost: x\n\n", id="bare-LF-CVE-2022-32214"),
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", id="bare-LF-header"),
    # llhttp CVE-2022-35256: a header field not ended by CRLF.
    pytest.param(b"POST /public/v1/account/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 0\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="LF-ended-CL-CVE-2022-35256"),
    # llhttp CVE-2023-30589, aiohttp GHSA-45c4-8wx5-qw6w (CVE-2023-37276): a bare CR.
    pytest.param(b"POST /public/v1/account/orders HTTP/1.1\r\nHost: x\r\nX-Abc: \rxTransfer-"
                 b"Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n\r\n",
                 id="bare-CR-CVE-2023-30589-GHSA-45c4-8wx5-qw6w"),
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", id="bare-CR"),
    # llhttp CVE-2025-23167: a head ended by CRLF CR and any byte.
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\n\rX" + _SMUGGLED,
                 id="CRLF-CR-X-CVE-2025-23167"),
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n",
                 id="obs-fold"),
    # Node CVE-2024-27982: a space before the first header name (a fold of the request line).
    pytest.param(b"POST /public/v1/account/orders HTTP/1.1\r\n Content-Length: 5\r\nHost: x"
                 b"\r\n\r\nhello", id="space-before-first-header-CVE-2024-27982"),
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\nX-A: b\x00c\r\n\r\n",
                 id="NUL-in-header-value"),
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\nX-A: b\x01c\r\n\r\n",
                 id="control-in-header-value"),
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\nX-A: b\x7fc\r\n\r\n",
                 id="DEL-in-header-value"),
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\nX-\x00A: b\r\n\r\n",
                 id="NUL-in-header-name"),
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\nBad Name: b\r\n\r\n",
                 id="space-in-header-name"),
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n", id="empty-header-name"),
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", id="no-colon"),
    # aiohttp GHSA-8qpw-xqxj-h4r2 (CVE-2024-23829): separators and non-ASCII digits.
    pytest.param(b"GET /public/v1/time HTTP/1\xc3\xb61\r\nHost: x\r\n\r\n",
                 id="version-non-ascii-GHSA-8qpw-xqxj-h4r2"),
    pytest.param("GET /public/v1/time HTTP/1.\U0001d7d9\r\nHost: x\r\n\r\n".encode(),
                 id="version-unicode-digit-GHSA-8qpw-xqxj-h4r2"),
    pytest.param(b"GET/: /public/v1/time HTTP/1.1\r\nHost: x\r\n\r\n",
                 id="method-separator-GHSA-8qpw-xqxj-h4r2"),
    pytest.param(b"POST /public/v1/account/orders HTTP/1.1\r\nHost: x\r\nContent-Encoding?: "
                 b"chunked\r\nTransfer-Encoding?: chunked\r\n\r\n",
                 id="name-separator-GHSA-8qpw-xqxj-h4r2"),
    pytest.param(b"get /public/v1/time HTTP/1.1\r\nHost: x\r\n\r\n", id="method-lower-case"),
    pytest.param(b"G\xc3\x89T /public/v1/time HTTP/1.1\r\nHost: x\r\n\r\n", id="method-non-ascii"),
    pytest.param(b"GET /public/v1/ti\x00me HTTP/1.1\r\nHost: x\r\n\r\n", id="NUL-in-path"),
    pytest.param(b"GET /public/v1/ti\x01me HTTP/1.1\r\nHost: x\r\n\r\n", id="control-in-path"),
    # uvicorn CVE-2020-7694: escape sequences in the path, written to the log.
    pytest.param(b"GET /public/v1/\x1b[31mtime HTTP/1.1\r\nHost: x\r\n\r\n",
                 id="ESC-in-path-CVE-2020-7694"),
    pytest.param(b"GET /public/v1/ti\tme HTTP/1.1\r\nHost: x\r\n\r\n", id="tab-in-path"),
    pytest.param(b"GET /public/v1/ti\xffme HTTP/1.1\r\nHost: x\r\n\r\n", id="high-byte-in-path"),
    pytest.param(b"GET /public/v1/time HTTP/1.1 x\r\nHost: x\r\n\r\n", id="space-in-target"),
    pytest.param(b"GET /public/v1/time\r\n\r\n", id="HTTP/0.9"),
    pytest.param(b"GET /public/v1/time HTTP/1.2\r\nHost: x\r\n\r\n", id="HTTP/1.2"),
    pytest.param(b"GET /public/v1/time HTTP/2.0\r\nHost: x\r\n\r\n", id="HTTP/2.0"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00",
                 id="HTTP/2-preface"),
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", id="two-hosts"),
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\n\r\n", id="no-host"),
    pytest.param(b"GET http://evil.example/public/v1/time HTTP/1.1\r\nHost: x\r\n\r\n",
                 id="absolute-form"),
    pytest.param(b"GET //evil.example@x/public/v1/time#x HTTP/1.1\r\nHost: x\r\n\r\n",
                 id="fragment"),
    pytest.param(b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
                 id="authority-form-CONNECT"),
    pytest.param(b"CONNECT /public/v1/time HTTP/1.1\r\nHost: x\r\n\r\n", id="CONNECT-path"),
    pytest.param(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", id="asterisk-form"),
    pytest.param(b"GET /public/v1/time#frag HTTP/1.1\r\nHost: x\r\n\r\n", id="fragment-path"),
    pytest.param(b"GET /public/v1/time?a=1#frag HTTP/1.1\r\nHost: x\r\n\r\n",
                 id="fragment-after-query"),
    pytest.param(b"GET /public/v1/time?a=\x7f HTTP/1.1\r\nHost: x\r\n\r\n", id="DEL-in-query"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)),
                 id="TLS-hello"),
]


@pytest.mark.parametrize("raw", UNREADABLE_HEADS)
async def test_unreadable_heads_are_refused_and_nothing_is_forwarded(
        gateway: RunningGateway, upstream: RecordingUpstream, outcomes: list[Outcome],
        raw: bytes) -> None:
    """A head a strict reader refuses gets 400 ILLEGAL_CHARS, counted under the id the client
    was given; the connection closes and not a byte goes upstream."""
    reply = await converse(gateway.port, raw + _SMUGGLED)
    answer = refused(reply, 400, "ILLEGAL_CHARS")
    await nothing_reached(upstream)
    gateway.services.outcomes.drain()
    assert [(o.request_id, o.status) for o in outcomes] == [(answer.header("X-Request-Id"), 400)]


# --- bodies a strict reader refuses ---------------------------------------------------------

UNREADABLE_BODIES = [
    pytest.param(b"FFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n", id="chunk-size-overflow"),
    pytest.param(b"0x5\r\nhello\r\n0\r\n\r\n", id="chunk-size-0x"),
    pytest.param(b"+5\r\nhello\r\n0\r\n\r\n", id="chunk-size-plus"),
    pytest.param(b"-5\r\nhello\r\n0\r\n\r\n", id="chunk-size-negative"),
    pytest.param(b"5 \r\nhello\r\n0\r\n\r\n", id="chunk-size-space"),
    pytest.param(b"\r\nhello\r\n0\r\n\r\n", id="chunk-size-empty"),
    # aiohttp GHSA-8495-4g3g-x7pr (CVE-2024-52304): a LF inside a chunk extension.
    pytest.param(b"5;a\nb\r\nhello\r\n0\r\n\r\n", id="chunk-extension-LF-GHSA-8495-4g3g-x7pr"),
    pytest.param(b"5;a=b\rc\r\nhello\r\n0\r\n\r\n", id="chunk-extension-CR"),
    # llhttp CVE-2021-22960: chunk extensions not checked.
    pytest.param(b"5;a=\x01\r\nhello\r\n0\r\n\r\n", id="chunk-extension-control-CVE-2021-22960"),
    pytest.param(b"5\nhello\r\n0\r\n\r\n", id="chunk-size-bare-LF"),
    # h11 GHSA-vqfr-h8mv-ghfj (CVE-2025-43859): any two bytes accepted after chunk data.
    pytest.param(b"5\r\nhelloXX0\r\n\r\n", id="chunk-data-no-CRLF-GHSA-vqfr-h8mv-ghfj"),
    pytest.param(b"5\r\nhello\n0\r\n\r\n", id="chunk-data-bare-LF"),
    pytest.param(b"3\r\nhello\r\n0\r\n\r\n", id="chunk-longer-than-size"),
    pytest.param(b"5\r\nhello\r\n0\r\nX: y\n\r\n", id="trailer-bare-LF"),
    pytest.param(b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n", id="trailer-content-length"),
    pytest.param(b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
                 id="trailer-transfer-encoding"),
    # aiohttp GHSA-9548-qrrj-x5pj (CVE-2025-53643): the trailer section not parsed.
    pytest.param(b"5\r\nhello\r\n0\r\n" + _SMUGGLED, id="request-as-trailer-GHSA-9548-qrrj-x5pj"),
]


@pytest.mark.parametrize("body", UNREADABLE_BODIES)
async def test_unreadable_chunked_bodies_are_refused_and_the_upstream_leg_cut(
        gateway: RunningGateway, upstream: RecordingUpstream, key: IssuedKey,
        body: bytes) -> None:
    """A chunked body that turns unreadable gets 400 and the connection closes. The request's
    head may have gone upstream already (bodies stream), but never a whole request, and the
    upstream connection that carried its start is closed, not left holding it."""
    await pooled(gateway, upstream)
    raw = post(b"Transfer-Encoding: chunked\r\n", body).replace(b"{A}", auth(key))
    reply = await converse(gateway.port, raw + _SMUGGLED)
    refused(reply, 400, "ILLEGAL_CHARS")
    await no_whole_request(upstream)


async def test_a_chunked_body_refused_after_its_head_went_upstream(
        gateway: RunningGateway, upstream: RecordingUpstream, key: IssuedKey) -> None:
    """The same, in two steps, so the upstream surely has the head and first chunk before the
    bad chunk arrives."""
    await pooled(gateway, upstream)
    head = post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n").replace(b"{A}", auth(key))
    reader, writer = await open_raw(gateway.port)
    writer.write(head)
    assert await upstream.wait_for(lambda: any(b"hello" in d for d in upstream.received()))
    writer.write(b"zz\r\n" + _SMUGGLED)
    answer = await asyncio.wait_for(reader.read(), 3)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    await no_whole_request(upstream)


# --- what is dropped on the way -------------------------------------------------------------

DROPPED = [
    b"X_Gateway_Account_Id: 1", b"X-Gateway-Account-Id: 1", b"x-GATEWAY-key-id: forged",
    b"X-Gateway-Permissions: withdraw", b"X-Gateway-Secret: forged", b"X-Gateway-Anything: 1",
    b"X-Forwarded-For: 203.0.113.9", b"X-Forwarded-Host: evil.example",
    b"X-Forwarded-Proto: https", b"X-Forwarded-Port: 1", b"X-Forwarded-Prefix: /admin",
    b"X-Forwarded-Server: evil", b"X_Forwarded_For: 203.0.113.9", b"x_real_ip: 203.0.113.9",
    b"X-Original-URL: /admin", b"X-Rewrite-URL: /admin", b"Forwarded: for=203.0.113.9",
    b"X-Real-IP: 203.0.113.9", b"X-HTTP-Method-Override: DELETE", b"X-HTTP-Method: DELETE",
    b"X-Method-Override: DELETE", b"X-Original-Method: DELETE", b"Proxy-Authorization: x",
    b"Proxy-Connection: keep-alive", b"Keep-Alive: timeout=5", b"TE: trailers",
    b"Trailer: X-T", b"Content_Length: 50", b"Transfer_Encoding: chunked",
    b"Connection: keep-alive, X-Named", b"X-Named: hop-by-hop by name",
]


async def test_headers_the_gateway_drops_never_reach_the_upstream(
        gateway: RunningGateway, upstream: RecordingUpstream, key: IssuedKey) -> None:
    raw = get(BALANCES, auth(key), *(h + b"\r\n" for h in DROPPED), b"X-Kept: yes\r\n")
    reply = await converse(gateway.port, raw)
    assert reply.statuses == [200], reply
    request = forwarded_once(upstream, "GET", BALANCES, key)
    client_sent = [n for n in request.header_names() if n not in (
        b"host", b"x-request-id", *_GATEWAY_OWN, *_FORWARDED_OWN)]
    assert client_sent == [b"x-kept"], request.headers
    assert request.values(b"x-gateway-permissions") == [b"read,trade,withdraw"]
    assert request.values(b"x-forwarded-host") == [b"x"]


async def test_a_header_name_cannot_hold_a_colon(
        gateway: RunningGateway, upstream: RecordingUpstream) -> None:
    """`X-A:B: c` is the header `X-A` with the value `B: c`, for the gateway and upstream alike."""
    reply = await converse(gateway.port, get(TIME, b"X-A:B: c\r\n"))
    assert reply.statuses == [200], reply
    assert forwarded_once(upstream, "GET", TIME).values(b"x-a") == [b"B: c"]


async def test_a_connection_header_cannot_hide_the_key(
        gateway: RunningGateway, upstream: RecordingUpstream, key: IssuedKey) -> None:
    """`Connection: Authorization` does not make the key hop-by-hop before it is checked."""
    reply = await converse(gateway.port, get(BALANCES, b"Connection: Authorization\r\n"))
    assert error_of(refused(reply, 401, "MISSING_CREDENTIALS", closes=False))
    await nothing_reached(upstream)
    reply = await converse(gateway.port, get(BALANCES, b"Connection: Authorization\r\n",
                                             auth(key)))
    assert reply.statuses == [200], reply
    forwarded_once(upstream, "GET", BALANCES, key)


@pytest.mark.parametrize("given", [b"a b", b"x" * 65, b"id%0d%0aSet-Cookie:%20a=b", b"\xc3\xa9"])
async def test_unsafe_request_ids_are_replaced_on_both_legs(
        gateway: RunningGateway, upstream: RecordingUpstream, given: bytes) -> None:
    """uvicorn GHSA-f97h-2pfx-f59f (CVE-2020-7695): a value echoed into an answer's headers
    must not split it. An id the gateway would not echo is replaced, on both legs alike."""
    reply = await converse(gateway.port, get(TIME, b"X-Request-Id: " + given + b"\r\n"))
    assert reply.statuses == [200], reply
    answer = reply.answers[0]
    assert answer.header("X-Request-Id") != given.decode("latin-1")
    assert answer.header("Set-Cookie") is None
    request = forwarded_once(upstream, "GET", TIME)
    assert request.values(b"x-request-id") == [answer.header("X-Request-Id").encode()]  # type: ignore[union-attr]


async def test_percent_encoded_escape_sequences_never_reach_the_log_decoded(
        gateway: RunningGateway, upstream: RecordingUpstream, outcomes: list[Outcome]) -> None:
    """uvicorn CVE-2020-7694: a path logged after percent-decoding writes terminal escape
    sequences into the access log. Only unreserved characters are ever decoded."""
    path = b"/public/v1/order-book/%1b%5b31mRED%1b%5b0m%0d%0aforged"
    reply = await converse(gateway.port, get(path))
    assert reply.statuses == [200], reply
    assert forwarded_once(upstream, "GET", path).path == path  # sent on as it came
    gateway.services.outcomes.drain()
    assert [o.path for o in outcomes] == [path.decode()]
    assert not any(c in outcomes[0].path for c in "\x1b\r\n")


async def test_two_request_ids_the_first_is_kept_and_sent_once(
        gateway: RunningGateway, upstream: RecordingUpstream) -> None:
    reply = await converse(gateway.port, get(TIME, b"X-Request-Id: first\r\n",
                                             b"X-Request-Id: second\r\n"))
    assert [a.header("X-Request-Id") for a in reply.answers] == ["first"]
    assert forwarded_once(upstream, "GET", TIME).values(b"x-request-id") == [b"first"]


# --- paths: what is matched is what is forwarded --------------------------------------------

REFUSED_PATHS = [
    b"/public/v1/account%2Fbalances", b"/public/v1/account%2fbalances",
    b"/public/v1/account%252Fbalances", b"/public/v1/account%5Cbalances",
    b"/public/v1/account%5cbalances", b"/public/v1/time%00", b"/public/v1/account/%2E%2E/time",
    b"/public/v1/account/%2e%2e/time", b"/public/v1/account/..%2Ftime",
    b"/public/v1/account/.%2E/time", b"/public/v1/%2E/time", b"/public/v1\\time",
    b"/public/v1/time;x=1", b"/public/v1/account/balances;/../../time", b"/public/v1/t%zzime",
    b"/public/v1/time%", b"/public/v1/time%2", b"/public/v1/%25",
]


@pytest.mark.parametrize("path", REFUSED_PATHS)
async def test_paths_whose_meaning_depends_on_decoding_are_refused(
        gateway: RunningGateway, upstream: RecordingUpstream, key: IssuedKey,
        path: bytes) -> None:
    reply = await converse(gateway.port, get(path, auth(key)))
    refused(reply, 400, "ILLEGAL_CHARS", closes=False)
    await nothing_reached(upstream)


MATCHED_PATHS = [
    # Unreserved characters are decoded before matching (RFC 3986 6.2.2.2), and the decoded
    # path is what the upstream gets: the upstream decodes them too.
    pytest.param("DELETE", b"/public/v1/account/orders/%63ancel-all-after",
                 b"/public/v1/account/orders/cancel-all-after",
                 "/public/v1/account/orders/cancel-all-after", id="%63ancel-all-after"),
    pytest.param("DELETE", b"/public/v1/account/orders/%63%61ncel-all-after",
                 b"/public/v1/account/orders/cancel-all-after",
                 "/public/v1/account/orders/cancel-all-after", id="two-escapes"),
    pytest.param("GET", b"/public/v1/account/orders/%63lient/abc",
                 b"/public/v1/account/orders/client/abc",
                 "/public/v1/account/orders/client/{client_id}", id="%63lient"),
    pytest.param("GET", b"/public/v1/%74ime", TIME, "/public/v1/time", id="%74ime"),
    pytest.param("GET", b"/public/v1/order-book/BTC%5fEUR", b"/public/v1/order-book/BTC_EUR",
                 "/public/v1/order-book/{instrument_code}", id="lower-case-hex"),
    pytest.param("GET", b"/public/v1/order-book/BTC%7EEUR%2D1",
                 b"/public/v1/order-book/BTC~EUR-1",
                 "/public/v1/order-book/{instrument_code}", id="tilde-and-dash"),
    # Escapes of anything else stay as they were sent.
    pytest.param("GET", b"/public/v1/order-book/BTC%20EUR", b"/public/v1/order-book/BTC%20EUR",
                 "/public/v1/order-book/{instrument_code}", id="space-stays-encoded"),
    pytest.param("GET", b"/public/v1/order-book/%C3%A9", b"/public/v1/order-book/%C3%A9",
                 "/public/v1/order-book/{instrument_code}", id="utf8-stays-encoded"),
    pytest.param("GET", b"/public/v1/account/../time", TIME, "/public/v1/time",
                 id="dot-dot"),
    pytest.param("GET", b"/public/v1/./time", TIME, "/public/v1/time", id="dot"),
    pytest.param("GET", b"/../../public/v1/time", TIME, "/public/v1/time", id="above-root"),
    pytest.param("GET", b"//public//v1///time", TIME, "/public/v1/time", id="double-slashes"),
    pytest.param("GET", b"/public/v1/account/orders/x/../../balances", BALANCES,
                 "/public/v1/account/balances", id="dot-dot-into-another-route"),
    pytest.param("GET", b"/public/v1/time?../../admin%2F;x#", TIME, "/public/v1/time",
                 id="query-untouched"),
]


@pytest.mark.parametrize(("method", "sent", "path", "pattern"), MATCHED_PATHS)
async def test_the_path_forwarded_is_the_path_matched(
        gateway: RunningGateway, upstream: RecordingUpstream, key: IssuedKey,
        outcomes: list[Outcome], method: str, sent: bytes, path: bytes, pattern: str) -> None:
    if b"#" in sent:
        sent = sent.replace(b"#", b"")
    raw = method.encode() + b" " + sent + b" HTTP/1.1\r\nHost: x\r\n" + auth(key) + b"\r\n"
    reply = await converse(gateway.port, raw)
    assert reply.statuses == [200], reply
    route = gateway.services.table.match(method, path.decode())
    request = forwarded_once(upstream, method, path,
                             None if route is None or route.is_public else key)
    if b"?" in sent:
        assert request.target.partition(b"?")[2] == sent.partition(b"?")[2]
    gateway.services.outcomes.drain()
    assert [o.route for o in outcomes] == [pattern]
    # The table, asked about what the upstream got, names the same route.
    assert route is not None and route.pattern == pattern


# --- bodies where none belongs, Expect, Upgrade ---------------------------------------------

@pytest.mark.parametrize("raw", [
    get(TIME, b"Content-Length: 5\r\n") + b"hello",
    get(TIME, b"Transfer-Encoding: chunked\r\n") + b"5\r\nhello\r\n0\r\n\r\n",
    b"HEAD /public/v1/time HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    get(BALANCES, b"Content-Length: " + str(len(_SMUGGLED)).encode() + b"\r\n") + _SMUGGLED,
], ids=["GET-length", "GET-chunked", "HEAD-length", "GET-smuggling-in-body"])
async def test_get_and_head_with_a_body_are_refused(
        gateway: RunningGateway, upstream: RecordingUpstream, raw: bytes) -> None:
    reply = await converse(gateway.port, raw)
    refused(reply, 400, "ILLEGAL_CHARS")
    await nothing_reached(upstream)


async def test_get_with_an_empty_length_is_a_get(
        gateway: RunningGateway, upstream: RecordingUpstream) -> None:
    reply = await converse(gateway.port, get(TIME, b"Content-Length: 0\r\n") + get(FEES),
                           answers=2)
    assert reply.statuses == [200, 200], reply
    assert [r.path for r in upstream.requests()] == [TIME, FEES]


async def test_expect_100_continue_gets_one_100_then_the_answer(
        gateway: RunningGateway, upstream: RecordingUpstream, key: IssuedKey) -> None:
    head = post(b"Content-Length: 5\r\nExpect: 100-continue\r\n", b"").replace(b"{A}", auth(key))
    reader, writer = await open_raw(gateway.port)
    writer.write(head)
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    data = await asyncio.wait_for(reader.readuntil(b'{"ok":true}'), 3)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200 "), data
    assert b"100 Continue" not in data, "a second 100 Continue"
    request = forwarded_once(upstream, "POST", ORDERS, key)
    assert request.body == b"hello"
    assert b"expect" not in request.header_names()


async def test_expect_100_continue_refused_gets_no_100(
        gateway: RunningGateway, upstream: RecordingUpstream) -> None:
    """Refused before the body is asked for: the answer comes at once, without a 100, and
    the connection closes (the body it did not read would otherwise read as a request)."""
    head = post(b"Content-Length: 5\r\nExpect: 100-continue\r\n", b"", key_header=b"")
    reply = await converse(gateway.port, head)
    assert reply.interim == [], reply
    refused(reply, 401, "MISSING_CREDENTIALS")
    await nothing_reached(upstream)


@pytest.mark.parametrize("framing", [
    b"Content-Length: %d\r\n" % len(_SMUGGLED),
    b"Transfer-Encoding: chunked\r\n",
], ids=["length", "chunked"])
async def test_an_upgrade_request_with_a_body_is_not_split_in_two(
        gateway: RunningGateway, upstream: RecordingUpstream, key: IssuedKey,
        framing: bytes) -> None:
    """aiohttp GHSA-mfx4-hv73-q22v: llhttp ends a request that asks to upgrade at its head,
    whatever body it declares, and hands back the body as the bytes after it. The gateway
    switches to no protocol, so the body must be read as a body (or the request refused):
    never forwarded without it, never read as a request of its own, never dropped with a
    200 to the client."""
    body = _SMUGGLED if framing.startswith(b"Content") else (
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(_SMUGGLED), _SMUGGLED))
    raw = post(b"Connection: Upgrade\r\nUpgrade: websocket\r\n" + framing, body).replace(
        b"{A}", auth(key))
    reply = await converse(gateway.port, raw, answers=1)
    assert len(reply.answers) == 1, reply
    answer = reply.answers[0]
    if answer.status == 200:
        request = forwarded_once(upstream, "POST", ORDERS, key)
        assert request.body == _SMUGGLED
    else:
        assert answer.status == 400 and error_of(answer)["error"] == "ILLEGAL_CHARS", reply
        await no_whole_request(upstream)
    assert all(r.path != FEES for r in upstream.requests()), "the body was read as a request"


@pytest.mark.parametrize("upgrade", [
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
    b"Upgrade: websocket\r\n",
], ids=["websocket", "h2c", "upgrade-without-connection"])
async def test_upgrades_are_plain_requests_and_what_follows_is_the_next(
        gateway: RunningGateway, upstream: RecordingUpstream, upgrade: bytes) -> None:
    reply = await converse(gateway.port, get(TIME, upgrade) + get(FEES), answers=2)
    assert reply.statuses == [200, 200], reply
    requests = upstream.requests()
    assert [r.path for r in requests] == [TIME, FEES]
    for request in requests:
        assert_clean(request)


async def test_http10_with_transfer_encoding_closes_after_its_answer(
        gateway: RunningGateway, upstream: RecordingUpstream, key: IssuedKey) -> None:
    """RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing: it may
    be answered, but the connection must close after it, keep-alive or not."""
    raw = (b"POST /public/v1/account/orders HTTP/1.0\r\nHost: x\r\n" + auth(key)
           + b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n0\r\n\r\n" + get(FEES))
    reply = await converse(gateway.port, raw, answers=1)
    assert len(reply.answers) == 1 and reply.closed, reply
    assert all(r.path != FEES for r in upstream.requests())


async def test_http10_keep_alive_without_host(
        gateway: RunningGateway, upstream: RecordingUpstream) -> None:
    raw = (b"GET /public/v1/time HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + get(FEES))
    reply = await converse(gateway.port, raw, answers=2)
    assert reply.statuses == [200, 200], reply
    assert [r.path for r in upstream.requests()] == [TIME, FEES]


# --- sizes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    get(TIME, b"X-Long: " + b"a" * 9000 + b"\r\n"),
    get(TIME, b"X" * 9000 + b": 1\r\n"),
    get(TIME, *(b"X-H%d: 1\r\n" % i for i in range(150))),
    get(TIME + b"?" + b"a" * 9000),
    get(TIME, *(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(90))),
], ids=["long-value", "long-name", "too-many", "long-target", "many-long"])
async def test_heads_past_their_limits_get_431(
        gateway: RunningGateway, upstream: RecordingUpstream, raw: bytes) -> None:
    reply = await converse(gateway.port, raw)
    refused(reply, 431, "HEADERS_TOO_LARGE")
    await nothing_reached(upstream)


async def test_a_huge_declared_chunk_is_cut_at_the_body_deadline(
        gateway: RunningGateway, upstream: RecordingUpstream, key: IssuedKey) -> None:
    """A chunk that declares 4 GiB and sends five bytes: refused (too large, or too slow)
    within the body deadline, and the upstream leg is cut."""
    raw = post(b"Transfer-Encoding: chunked\r\n", b"FFFFFFFF\r\nhello").replace(b"{A}", auth(key))
    started = time.monotonic()
    reply = await converse(gateway.port, raw, timeout=BODY_TIMEOUT + 3 * SLACK)
    assert time.monotonic() - started < BODY_TIMEOUT + 2 * SLACK
    assert reply.statuses in ([408], [413]), reply
    refused(reply, reply.statuses[0],
            "PAYLOAD_TOO_LARGE" if reply.statuses == [413] else "REQUEST_TIMEOUT")
    await no_whole_request(upstream)


# --- pipelining and half-close --------------------------------------------------------------

async def test_pipelined_requests_are_answered_in_order(
        gateway: RunningGateway, upstream: RecordingUpstream) -> None:
    ids = [b"p%02d" % i for i in range(40)]  # past max_pipelined: reading pauses, resumes
    raw = b"".join(get(TIME if i % 2 else FEES, b"X-Request-Id: " + rid + b"\r\n")
                   for i, rid in enumerate(ids))
    reply = await converse(gateway.port, raw, answers=len(ids), timeout=10)
    assert [a.header("X-Request-Id") for a in reply.answers] == [i.decode() for i in ids]
    assert reply.statuses == [200] * len(ids)
    assert [r.values(b"x-request-id")[0] for r in upstream.requests()] == ids


async def test_a_bad_request_in_a_pipeline_closes_after_the_good_ones(
        gateway: RunningGateway, upstream: RecordingUpstream) -> None:
    """The requests read whole before the bad one are answered, in order; the bad one gets the
    contract's 400 (or nothing), the connection closes, and nothing after it is forwarded."""
    raw = (get(TIME, b"X-Request-Id: good-1\r\n") + get(FEES, b"X-Request-Id: good-2\r\n")
           + b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n"
           + get(TIME, b"X-Request-Id: after\r\n"))
    reply = await converse(gateway.port, raw, answers=3)
    assert reply.closed, reply
    assert [a.header("X-Request-Id") for a in reply.answers[:2]] == ["good-1", "good-2"], reply
    assert reply.statuses[:2] == [200, 200]
    if len(reply.answers) > 2:
        assert len(reply.answers) == 3, reply
        assert error_of(reply.answers[2])["error"] == "ILLEGAL_CHARS"
    assert [r.values(b"x-request-id")[0] for r in upstream.requests()] == [b"good-1", b"good-2"]


async def test_head_answers_carry_no_body_and_the_next_answer_follows(
        gateway: RunningGateway, upstream: RecordingUpstream) -> None:
    raw = b"HEAD /public/v1/time HTTP/1.1\r\nHost: x\r\n\r\n" + get(FEES)
    reader, writer = await open_raw(gateway.port)
    writer.write(raw)
    data = b""
    while data.count(b'{"ok":true}') < 1 or data.count(b"HTTP/1.1 ") < 2:
        chunk = await asyncio.wait_for(reader.read(65536), 3)
        assert chunk, data
        data += chunk
    writer.close()
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 "), data
    assert b"Content-Length: 11" in first
    assert rest.startswith(b"HTTP/1.1 200 "), "the HEAD answer carried a body"
    assert [r.method for r in upstream.requests()] == ["HEAD", "GET"]


async def test_half_closed_clients_are_still_answered(
        gateway: RunningGateway, upstream: RecordingUpstream) -> None:
    reply = await converse(gateway.port, get(TIME) + get(FEES), answers=2, half_close=True)
    assert reply.statuses == [200, 200], reply
    assert reply.closed, "the gateway kept a half-closed connection open"
    assert [r.path for r in upstream.requests()] == [TIME, FEES]


async def test_half_close_while_the_upstream_answers_slowly(
        gateway: RunningGateway, upstream: RecordingUpstream) -> None:
    """The client's FIN arrives while its request is with the upstream: still answered."""
    upstream.hold = True
    reader, writer = await open_raw(gateway.port)
    writer.write(get(TIME))
    await writer.drain()
    assert await upstream.wait_for(lambda: upstream.requests() != [])
    writer.write_eof()
    await asyncio.sleep(0.2)
    upstream.release()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200 "), data


# --- deadlines ------------------------------------------------------------------------------

async def test_slow_headers_get_408_within_the_header_deadline(
        gateway: RunningGateway, upstream: RecordingUpstream) -> None:
    started = time.monotonic()
    reply = await converse(gateway.port, [b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\n"],
                           timeout=HEADER_TIMEOUT + 3 * SLACK)
    took = time.monotonic() - started
    refused(reply, 408, "REQUEST_TIMEOUT")
    assert HEADER_TIMEOUT * 0.9 <= took < HEADER_TIMEOUT + 2 * SLACK, took
    await nothing_reached(upstream)


async def test_trickled_headers_get_408_the_deadline_is_not_renewed(
        gateway: RunningGateway, upstream: RecordingUpstream) -> None:
    parts: list[bytes | float] = [b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\n"]
    for i in range(int((HEADER_TIMEOUT + 2 * SLACK) / 0.2)):
        parts += [0.2, b"X-%d: 1\r\n" % i]
    started = time.monotonic()
    reply = await converse(gateway.port, parts, timeout=HEADER_TIMEOUT + 4 * SLACK)
    assert time.monotonic() - started < HEADER_TIMEOUT + 2 * SLACK
    refused(reply, 408, "REQUEST_TIMEOUT")
    await nothing_reached(upstream)


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickled"])
async def test_slow_bodies_get_408_and_the_upstream_is_let_go(
        gateway: RunningGateway, upstream: RecordingUpstream, key: IssuedKey,
        trickle: bool) -> None:
    head = post(b"Content-Length: 100\r\n", b"0123456789").replace(b"{A}", auth(key))
    parts: list[bytes | float] = [head]
    if trickle:
        for _ in range(int((BODY_TIMEOUT + 2 * SLACK) / 0.2)):
            parts += [0.2, b"x"]
    started = time.monotonic()
    reply = await converse(gateway.port, parts, timeout=BODY_TIMEOUT + 4 * SLACK)
    took = time.monotonic() - started
    refused(reply, 408, "REQUEST_TIMEOUT")
    assert took < BODY_TIMEOUT + 2 * SLACK, took
    # The upstream had the head and the first bytes; its connection is closed by now, not
    # held until the upstream's own timeout.
    assert upstream.received(), "the body streams: the head should have gone upstream"
    await no_whole_request(upstream)


async def test_idle_keep_alive_connections_are_closed_without_an_answer(
        gateway: RunningGateway) -> None:
    started = time.monotonic()
    reply = await converse(gateway.port, get(TIME), answers=2, timeout=IDLE_TIMEOUT + 3 * SLACK)
    assert reply.statuses == [200] and reply.closed, reply
    assert IDLE_TIMEOUT * 0.9 <= time.monotonic() - started < IDLE_TIMEOUT + 2 * SLACK


async def test_connections_per_ip_are_capped(
        edge_settings: Settings, upstream: RecordingUpstream) -> None:
    running = await start_gateway(edge_settings.replace(max_connections_per_ip=3))
    try:
        held = [await open_raw(running.port) for _ in range(3)]
        for reader, writer in held:
            writer.write(get(TIME))
            assert (await asyncio.wait_for(reader.read(4096), 3)).startswith(b"HTTP/1.1 200")
        reply = await converse(running.port, get(TIME), timeout=2)
        assert reply.answers == [] and reply.closed, reply
        held[0][1].close()
        await asyncio.sleep(0.2)
        reply = await converse(running.port, get(TIME))
        assert reply.statuses == [200], "a freed place is not given again"
        for _, writer in held[1:]:
            writer.close()
        # Still answering once the cap was hit: the health check on a fresh connection.
        await asyncio.sleep(0.2)
        health = await converse(running.port, get(b"/healthz"))
        assert health.statuses == [200]
    finally:
        await running.stop()
