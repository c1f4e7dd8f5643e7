"""Needs: PostgreSQL and Redis (tests/conftest.py). Every error code of the contract's table,
produced by a real request through the real gateway in front of the sandbox exchange."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.settings import Settings
from gateway.observability.metrics import render_metrics
from gateway.observability.outcomes import Outcome
from tests.support.servers import (
    RunningApp,
    RunningGateway,
    bearer,
    issue_key,
    raw_request,
    start_gateway,
)
from tests.support.services import PrivateRedis, free_port

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BALANCES = "/public/v1/account/balances"


async def fetch(method: str, url: str, **kwargs: object) -> tuple[int, dict[str, object],
                                                                  CIMultiDict[str]]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, **kwargs) as resp:  # type: ignore[arg-type]
            body = await resp.json(content_type=None)
            return resp.status, body, CIMultiDict(resp.headers)


def assert_error(status: int, body: dict[str, object], headers: CIMultiDict[str],
                 expected_status: int, code: str) -> None:
    assert (status, body["error"]) == (expected_status, code), body
    assert body["request_id"] == headers["X-Request-Id"]
    assert isinstance(body["message"], str) and body["message"]


@pytest.fixture
async def limited(settings: Settings, sandbox: RunningApp) -> AsyncIterator[RunningApp]:
    """A gateway with tiny rate limits, a withdraw allowlist policy and a small body limit."""
    running = await start_gateway(settings.replace(
        upstream_url=sandbox.url, routes_path=FIXTURES / "routes-limited.yaml",
        max_body_size=1024, max_header_size=2048, auth_fail_limit=3))
    yield running
    await running.stop()


async def test_missing_credentials(gateway: RunningGateway) -> None:
    status, body, headers = await fetch("GET", gateway.url + BALANCES)
    assert_error(status, body, headers, 401, "MISSING_CREDENTIALS")
    assert headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("authorization", [
    "Bearer not-a-token", "Basic dXNlcjpwYXNz", "Bearer ",
    "Bearer kg_aaaaaaaaaaaaaaaa_" + "a" * 59,
])
async def test_invalid_apikey_for_malformed(gateway: RunningGateway, authorization: str) -> None:
    status, body, headers = await fetch("GET", gateway.url + BALANCES,
                                        headers={"Authorization": authorization})
    assert_error(status, body, headers, 401, "INVALID_APIKEY")


async def test_invalid_apikey_for_unknown_deleted_and_two_keys(
    gateway: RunningGateway, gateway_settings: Settings, db: asyncpg.Pool
) -> None:
    key = await issue_key(db, gateway_settings)
    other = await issue_key(db, gateway_settings)
    # A well-formed token for an id that does not exist.
    from gateway.keys.tokens import generate_key_id, generate_token

    unknown, _ = generate_token(generate_key_id())
    status, body, headers = await fetch("GET", gateway.url + BALANCES, headers=bearer(unknown))
    assert_error(status, body, headers, 401, "INVALID_APIKEY")
    # The right key id with another key's secret.
    forged = key.token[:20] + other.token[20:]
    status, body, headers = await fetch("GET", gateway.url + BALANCES, headers=bearer(forged))
    assert_error(status, body, headers, 401, "INVALID_APIKEY")
    # Two keys in one request.
    two = [("Authorization", f"Bearer {key.token}"), ("Authorization", f"Bearer {other.token}")]
    status, body, headers = await fetch("GET", gateway.url + BALANCES, headers=two)
    assert_error(status, body, headers, 401, "INVALID_APIKEY")


async def test_invalid_ip_restriction(gateway: RunningGateway, gateway_settings: Settings,
                                      db: asyncpg.Pool) -> None:
    key = await issue_key(db, gateway_settings, ["read"], ips=["203.0.113.7"])
    status, body, headers = await fetch("GET", gateway.url + BALANCES, headers=bearer(key.token))
    assert_error(status, body, headers, 403, "INVALID_IP_RESTRICTION")
    # The address the gateway saw, so a client behind NAT or a proxy knows what to allow.
    assert body["message"] == "The client IP address 127.0.0.1 is not allowed for this API key"


async def test_invalid_ip_restriction_names_the_forwarded_client(
        gateway_settings: Settings, db: asyncpg.Pool) -> None:
    import ipaddress

    running = await start_gateway(gateway_settings.replace(
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),)))
    try:
        key = await issue_key(db, gateway_settings, ["read"], ips=["203.0.113.7"])
        status, body, headers = await fetch(
            "GET", running.url + BALANCES,
            headers={**bearer(key.token), "X-Forwarded-For": "198.51.100.23"})
        assert_error(status, body, headers, 403, "INVALID_IP_RESTRICTION")
        assert body["message"] == (
            "The client IP address 198.51.100.23 is not allowed for this API key")
    finally:
        await running.stop()


async def test_missing_permission_names_it(gateway: RunningGateway, gateway_settings: Settings,
                                           db: asyncpg.Pool) -> None:
    key = await issue_key(db, gateway_settings, ["read"])
    status, body, headers = await fetch("POST", gateway.url + "/public/v1/account/withdraw/crypto",
                                        json={}, headers=bearer(key.token))
    assert_error(status, body, headers, 403, "MISSING_PERMISSION")
    assert "'withdraw'" in str(body["message"])


async def test_route_not_found_is_default_deny(gateway: RunningGateway) -> None:
    for method, path in [("GET", "/public/v1/nothing-here"), ("PATCH", "/public/v1/time"),
                         ("GET", "/")]:
        status, body, headers = await fetch(method, gateway.url + path)
        assert_error(status, body, headers, 404, "ROUTE_NOT_FOUND")


async def test_illegal_chars(gateway: RunningGateway) -> None:
    status, body, headers = await fetch(
        "GET", gateway.url + "/public/v1/account%2Fbalances",
        headers={"Authorization": "Bearer x"})
    assert_error(status, body, headers, 400, "ILLEGAL_CHARS")


async def exchange_raw(port: int, raw: bytes) -> tuple[int, CIMultiDict[str], bytes]:
    """Send bytes no HTTP client would; the answer up to the gateway's close (a connection
    left open fails here), as status, headers and body."""
    answer = await raw_request(port, raw, until_closed=True)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = CIMultiDict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


_SMUGGLED = b"GET /public/v1/account/balances HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(("raw", "expected_status", "code"), [
    pytest.param(b"POST /public/v1/account/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 42"
                 b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + _SMUGGLED,
                 400, "ILLEGAL_CHARS", id="content-length-and-chunked"),
    pytest.param(b"POST /public/v1/account/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 0"
                 b"\r\nContent-Length: 40\r\n\r\n" + _SMUGGLED,
                 400, "ILLEGAL_CHARS", id="two-content-lengths"),
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n",
                 400, "ILLEGAL_CHARS", id="space-in-header-name"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)),
                 400, "ILLEGAL_CHARS", id="tls-on-the-plain-port"),
    pytest.param(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000
                 + b"\r\n\r\n", 431, "HEADERS_TOO_LARGE", id="header-past-the-parser-limit"),
])
async def test_unparsable_requests_get_the_contract_error(
        gateway: RunningGateway, raw: bytes, expected_status: int, code: str) -> None:
    """The parser (llhttp, strict) refuses these before any step runs: the answer is still
    the contract's JSON with a request id, the connection is closed, and nothing smuggled
    behind the refused request is answered."""
    outcomes = gateway.services.outcomes
    seen: list[Outcome] = []
    outcomes.readers.append(seen.extend)  # beside the metrics and the access log
    status, headers, body = await exchange_raw(gateway.port, raw)
    assert headers["Content-Type"].startswith("application/json")
    length = int(headers["Content-Length"])
    assert_error(status, json.loads(body[:length]), headers, expected_status, code)
    assert body[length:] == b"", "a second answer followed the refusal"
    outcomes.drain()
    # Counted and logged like any answer, under the id the client was given.
    assert [(o.request_id, o.method, o.status, o.code) for o in seen] == [
        (headers["X-Request-Id"], "UNKNOWN", expected_status, code)]


async def test_payload_too_large_by_length_and_by_chunks(
    limited: RunningGateway, settings: Settings, db: asyncpg.Pool
) -> None:
    key = await issue_key(db, settings, ["withdraw"], ips=["127.0.0.1"])
    url = limited.url + "/public/v1/account/withdraw/crypto"
    status, body, headers = await fetch("POST", url, data=b"x" * 2048, headers=bearer(key.token))
    assert_error(status, body, headers, 413, "PAYLOAD_TOO_LARGE")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"y" * 512

    status, body, headers = await fetch("POST", url, data=chunks(), headers=bearer(key.token))
    assert_error(status, body, headers, 413, "PAYLOAD_TOO_LARGE")


async def test_headers_too_large(limited: RunningGateway) -> None:
    status, body, headers = await fetch("GET", limited.url + "/public/v1/time",
                                        headers={"X-Padding": "p" * 3000})
    assert_error(status, body, headers, 431, "HEADERS_TOO_LARGE")


async def test_ratelimit_per_account_with_retry_after(
    limited: RunningGateway, settings: Settings, db: asyncpg.Pool
) -> None:
    first = await issue_key(db, settings, ["read"])
    second = await issue_key(db, settings, ["read"], user_id=first.user_id)  # same account
    seen = []
    for key in (first, second, first, second):
        status, body, headers = await fetch("GET", limited.url + BALANCES,
                                            headers=bearer(key.token))
        seen.append(status)
    assert seen == [200, 200, 200, 429]
    assert_error(status, body, headers, 429, "RATELIMIT")
    assert int(headers["Retry-After"]) >= 1
    assert headers["X-RateLimit-Limit"] == "3" and headers["X-RateLimit-Remaining"] == "0"


async def test_ratelimit_public_per_ip_and_per_route(
    limited: RunningGateway, settings: Settings, db: asyncpg.Pool
) -> None:
    statuses = [(await fetch("GET", limited.url + "/public/v1/time"))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    key = await issue_key(db, settings, ["read"])
    trades = [(await fetch("GET", limited.url + "/public/v1/account/trades",
                           headers=bearer(key.token)))[0] for _ in range(2)]
    assert trades == [200, 429]


async def test_client_ip_blocked_after_failed_authentications(limited: RunningGateway) -> None:
    bad = {"Authorization": "Bearer kg_aaaaaaaaaaaaaaaa_" + "a" * 59}
    for _ in range(3):
        status, body, headers = await fetch("GET", limited.url + BALANCES, headers=bad)
        assert body["error"] == "INVALID_APIKEY"
    # Failures are counted off the request path: the block lands a moment later.
    for _ in range(50):
        status, body, headers = await fetch("GET", limited.url + "/public/v1/time")
        if status == 403:
            break
        await asyncio.sleep(0.02)
    assert_error(status, body, headers, 403, "CLIENT_IP_BLOCKED")
    assert int(headers["Retry-After"]) > 60


async def test_withdraw_policy_requires_an_allowlist(
    limited: RunningGateway, settings: Settings, db: asyncpg.Pool
) -> None:
    key = await issue_key(db, settings, ["withdraw"])
    status, body, headers = await fetch("POST", limited.url + "/public/v1/account/withdraw/crypto",
                                        json={}, headers=bearer(key.token))
    assert_error(status, body, headers, 403, "INVALID_IP_RESTRICTION")
    assert "allowlist" in str(body["message"])


async def test_upstream_refused_is_502(settings: Settings, db: asyncpg.Pool) -> None:
    running = await start_gateway(settings.replace(
        upstream_url=f"http://127.0.0.1:{free_port()}"))
    try:
        status, body, headers = await fetch("GET", running.url + "/public/v1/time")
        assert_error(status, body, headers, 502, "SERVICE_UNAVAILABLE")
    finally:
        await running.stop()


_HALF_ANSWERS = {
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"partial\": ",
    "chunked": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\nc\r\n{\"partial\": \r\n",
    # Framed by the end of the connection: a reset is not that end.
    "end of connection": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
                         b"{\"partial\": ",
}


@pytest.mark.parametrize("framing", sorted(_HALF_ANSWERS))
async def test_an_upstream_that_dies_mid_answer_cuts_the_client_off(
        settings: Settings, db: asyncpg.Pool, framing: str) -> None:
    """The status line had gone out: the client must see a broken answer, never a short one
    that looks complete. Counted as an upstream error."""
    async def half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_HALF_ANSWERS[framing])
        await writer.drain()
        await asyncio.sleep(0.1)
        # A reset, mid-body: an RST (a FIN would be the end of an answer framed by it).
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    upstream = await asyncio.start_server(half_answer, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    running = await start_gateway(settings.replace(upstream_url=f"http://127.0.0.1:{port}"))
    before = _aborted_count()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(running.url + "/public/v1/time") as resp:
                assert resp.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
        assert _aborted_count() == before + 1
    finally:
        await running.stop()
        upstream.close()


async def test_an_answer_framed_by_the_end_of_the_connection_arrives_whole(
        settings: Settings) -> None:
    """No length, no chunks: the upstream's clean close ends the answer. The client gets it
    all, framed (chunked), and the connection is not pooled."""
    connections = 0

    async def answer_and_close(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        await writer.drain()
        writer.write(b'{"whole": true}')
        writer.close()

    upstream = await asyncio.start_server(answer_and_close, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    running = await start_gateway(settings.replace(upstream_url=f"http://127.0.0.1:{port}"))
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.get(running.url + "/public/v1/time") as resp:
                    assert resp.status == 200
                    assert resp.headers.get("Transfer-Encoding") == "chunked"
                    assert await resp.json() == {"whole": True}
        assert connections == 2  # each answer ended its connection: none was reused
    finally:
        await running.stop()
        upstream.close()


def _aborted_count() -> float:
    text = render_metrics().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "keygate_upstream_errors_total"
               and sample.labels == {"route": "/public/v1/time", "code": "ABORTED"})


async def test_upstream_too_slow_is_504(gateway: RunningGateway, gateway_settings: Settings,
                                        db: asyncpg.Pool) -> None:
    key = await issue_key(db, gateway_settings)
    status, body, headers = await fetch("POST", gateway.url + "/__sandbox/slow?delay=3",
                                        headers=bearer(key.token))
    assert_error(status, body, headers, 504, "GATEWAY_TIMEOUT")


async def test_key_store_unreachable_is_503(
    settings: Settings, sandbox: RunningApp, db: asyncpg.Pool, private_redis: PrivateRedis
) -> None:
    key = await issue_key(db, settings)
    running = await start_gateway(settings.replace(
        upstream_url=sandbox.url, redis_url=private_redis.url,
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none"))
    try:
        status, body, headers = await fetch("GET", running.url + BALANCES,
                                            headers=bearer(key.token))
        assert_error(status, body, headers, 503, "SERVICE_UNAVAILABLE")
    finally:
        await running.stop()


async def test_upstream_answers_pass_through_unchanged(
    gateway: RunningGateway, gateway_settings: Settings, db: asyncpg.Pool
) -> None:
    key = await issue_key(db, gateway_settings)
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "/__sandbox/status/429",
                            headers=bearer(key.token)) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "7"  # the upstream's own, not ours
            assert "request_id" not in await resp.json()  # the upstream's body, not ours


async def test_slow_clients_are_cut_off_and_connections_capped(
    gateway_settings: Settings, tmp_path: Path
) -> None:
    from tests.support.processes import GatewayProcess

    config = tmp_path / "gateway.yaml"
    config.write_text("client_header_timeout: 1s\nmax_connections: 3\n")
    process = GatewayProcess(gateway_settings, extra_env={"GATEWAY_CONFIG": str(config)})
    try:
        # slowloris: a request line, then a header byte now and then, never finished.
        reader, writer = await asyncio.open_connection("127.0.0.1", process.port)
        writer.write(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\n")
        started = asyncio.get_running_loop().time()
        answer = b""
        for _ in range(40):
            await asyncio.sleep(0.1)
            try:
                writer.write(b"X")
                await writer.drain()
                chunk = await asyncio.wait_for(reader.read(4096), 0.01)
            except TimeoutError:
                continue
            except OSError:  # reset by the gateway: cut off, as intended
                break
            if chunk == b"":
                break
            answer += chunk
        closed_after = asyncio.get_running_loop().time() - started
        writer.close()
        assert closed_after < 3.0, "a client trickling headers kept its connection"
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"error": "REQUEST_TIMEOUT"' in answer

        # Three idle connections fill the cap; the fourth is refused at once.
        held = [await asyncio.open_connection("127.0.0.1", process.port) for _ in range(3)]
        await asyncio.sleep(0.1)
        extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", process.port)
        extra_writer.write(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = await asyncio.wait_for(extra_reader.read(100), 2)
        except OSError:  # reset rather than closed: refused all the same
            answer = b""
        assert answer == b""
        for _, w in held:
            w.close()
    finally:
        process.stop()


async def test_a_refusal_reaches_a_client_still_sending_its_body(gateway: RunningGateway) -> None:
    """An answer given before the body was read must not be lost to a reset: the gateway
    half-closes and drops the rest, rather than closing on unread bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(b"POST /public/v1/account/orders HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer kg_nope\r\nContent-Length: 1000000\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)  # answered (401) and closing by now
        with contextlib.suppress(ConnectionError):
            for _ in range(20):  # the body goes on arriving after the answer
                writer.write(b"x" * 16384)
                await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:100]
    assert b'"INVALID_APIKEY"' in answer
