"""Needs: PostgreSQL and Redis (tests/conftest.py). What the upstream receives: path and
header tricks refused or normalised, identity headers, allowlists over IPv4, IPv6 and a
trusted proxy, the trading flows per permission, and a 100 MB body in bounded memory."""

from __future__ import annotations

import hashlib
import resource
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from gateway.config.settings import Settings
from tests.support.servers import (
    RunningApp,
    RunningGateway,
    bearer,
    issue_key,
    raw_request,
    start_gateway,
)

pytestmark = pytest.mark.integration

BALANCES = "/public/v1/account/balances"
FIXTURE_ROUTES = Path(__file__).resolve().parents[1] / "fixtures" / "routes.yaml"


async def last_request(sandbox: RunningApp) -> dict[str, object]:
    async with aiohttp.ClientSession() as http:
        async with http.get(sandbox.url + "/__sandbox/last-request") as resp:
            result: dict[str, object] = await resp.json()
            return result


@pytest.mark.parametrize(("sent", "forwarded"), [
    ("/public/v1/./account/balances", "/public/v1/account/balances"),
    ("/public/v1//account///balances", "/public/v1/account/balances"),
    ("/public/v1/account/x/../balances", "/public/v1/account/balances"),
    ("/public/v1/account/balances?currency=BTC&x=%20", "/public/v1/account/balances"),
])
async def test_paths_are_normalised_and_forwarded_as_matched(
    gateway: RunningGateway, sandbox: RunningApp, gateway_settings: Settings, db: asyncpg.Pool,
    sent: str, forwarded: str,
) -> None:
    key = await issue_key(db, gateway_settings)
    response = await raw_request(gateway.port, (
        f"GET {sent} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key.token}\r\n"
        "Connection: close\r\n\r\n").encode())
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    seen = await last_request(sandbox)
    assert seen["path"] == forwarded
    if "?" in sent:
        assert seen["query_string"] == sent.partition("?")[2]  # the query, byte for byte


@pytest.mark.parametrize("path", [
    "/public/v1/account%2Fbalances", "/public/v1/account%2fbalances",
    "/public/v1/%2e%2e/public/v1/account/balances", "/public/v1/account/balances%00",
    "/public/v1/account/balances;x=1", "/public/v1/account\\balances",
    "/public/v1/account/%5cbalances", "/public/v1/account/%252fbalances",
])
async def test_paths_whose_meaning_depends_on_decoding_are_refused(
    gateway: RunningGateway, sandbox: RunningApp, path: str
) -> None:
    response = await raw_request(gateway.port, (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").encode())
    assert response.startswith(b"HTTP/1.1 400"), response[:200]
    assert b'"ILLEGAL_CHARS"' in response


async def test_headers_sent_upstream(gateway: RunningGateway, sandbox: RunningApp,
                                     gateway_settings: Settings, db: asyncpg.Pool) -> None:
    key = await issue_key(db, gateway_settings, ["read", "trade"])
    headers = {
        **bearer(key),
        "X-Gateway-Account-Id": "999999",  # spoofing another account
        "X-Gateway-Permissions": "withdraw",
        "X-Forwarded-For": "198.51.100.1",
        "X-HTTP-Method-Override": "DELETE",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "secret-hop",
        "Keep-Alive": "timeout=5",
        "X-Request-Id": "client-chosen.id_1",
        "X-Custom": "kept",
    }
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + BALANCES, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["X-Request-Id"] == "client-chosen.id_1"
    seen = await last_request(sandbox)
    received = seen["headers"]
    assert isinstance(received, dict)
    assert "authorization" not in received  # SECURITY: the key never leaves the gateway
    assert received["x-gateway-account-id"] == str(key.user_id)
    assert received["x-gateway-key-id"] == key.key_id
    assert received["x-gateway-permissions"] == "read,trade"
    assert received["x-forwarded-for"] == "127.0.0.1"  # rebuilt, not appended to
    assert received["x-forwarded-proto"] == "http"
    assert received["x-request-id"] == "client-chosen.id_1"
    assert received["x-custom"] == "kept"
    for dropped in ("x-http-method-override", "x-hop", "keep-alive"):
        assert dropped not in received
    assert seen["method"] == "GET"


async def test_no_header_is_added_that_the_client_did_not_send(
    gateway: RunningGateway, sandbox: RunningApp, gateway_settings: Settings, db: asyncpg.Pool,
) -> None:
    """The upstream sees the client's headers and the gateway's own, and nothing else: no
    default of the HTTP client library (Accept, User-Agent, Accept-Encoding, Content-Type)."""
    key = await issue_key(db, gateway_settings, ["read", "trade"])
    ours = ["host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id",
            "x-gateway-account-id", "x-gateway-key-id", "x-gateway-permissions"]
    response = await raw_request(gateway.port, (
        f"GET {BALANCES} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key.token}\r\n"
        "Connection: close\r\n\r\n").encode())
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    seen = await last_request(sandbox)
    received = seen["headers"]
    assert isinstance(received, dict)
    assert sorted(received) == sorted(ours)
    assert received["host"] == sandbox.url.removeprefix("http://")  # the upstream's own
    assert seen["header_list"][0][0] == "Host"  # type: ignore[index]

    response = await raw_request(gateway.port, (
        f"POST /public/v1/account/orders HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {key.token}\r\nUser-Agent: bot/1\r\nContent-Length: 2\r\n"
        "Connection: close\r\n\r\n{}").encode())
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    seen = await last_request(sandbox)
    received = seen["headers"]
    assert isinstance(received, dict) and seen["method"] == "POST"
    assert sorted(received) == sorted([*ours, "user-agent", "content-length"])
    assert received["user-agent"] == "bot/1" and received["content-length"] == "2"


async def test_unsafe_request_ids_are_replaced(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http:
        for given in ("x" * 65, "bad id", "a\u00e9"):
            async with http.get(gateway.url + "/public/v1/time",
                                headers={"X-Request-Id": given}) as resp:
                assert resp.headers["X-Request-Id"] != given
                assert len(resp.headers["X-Request-Id"]) <= 64


async def test_read_trade_withdraw_flows(gateway: RunningGateway, sandbox: RunningApp,
                                         gateway_settings: Settings, db: asyncpg.Pool) -> None:
    reader = await issue_key(db, gateway_settings, ["read"])
    trader = await issue_key(db, gateway_settings, ["read", "trade"], user_id=reader.user_id)
    order = {"instrument_code": "BTC_EUR", "type": "LIMIT", "side": "BUY", "amount": "0.01",
             "price": "10000.0"}
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + BALANCES, headers=bearer(reader)) as resp:
            assert resp.status == 200
            assert "balances" in await resp.json()
        async with http.post(gateway.url + "/public/v1/account/orders", json=order,
                             headers=bearer(reader)) as resp:
            assert resp.status == 403
        async with http.post(gateway.url + "/public/v1/account/orders", json=order,
                             headers=bearer(trader)) as resp:
            assert resp.status == 201, await resp.text()
            order_id = (await resp.json())["order_id"]
        async with http.get(f"{gateway.url}/public/v1/account/orders/{order_id}",
                            headers=bearer(reader)) as resp:
            assert resp.status == 200  # same account: the read key sees the trade key's order
        async with http.delete(f"{gateway.url}/public/v1/account/orders/{order_id}",
                               headers=bearer(reader)) as resp:
            assert resp.status == 403
        async with http.delete(f"{gateway.url}/public/v1/account/orders/{order_id}",
                               headers=bearer(trader)) as resp:
            assert resp.status == 204
        for key, expected in ((trader, 403), (await issue_key(db, gateway_settings,
                                                              ["withdraw"]), 200)):
            async with http.get(gateway.url + "/public/v1/account/deposit/crypto/BTC",
                                headers=bearer(key)) as resp:
                assert resp.status == expected, await resp.text()


async def test_permission_added_by_configuration_alone(
    gateway: RunningGateway, gateway_settings: Settings, db: asyncpg.Pool
) -> None:
    staker = await issue_key(db, gateway_settings, ["staking"])
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "/public/v1/account/staking",
                            headers=bearer(staker)) as resp:
            assert resp.status != 403  # the gateway let it through (the sandbox has no such page)
        async with http.get(gateway.url + BALANCES, headers=bearer(staker)) as resp:
            assert resp.status == 403


async def test_ipv6_allowlist(gateway_settings: Settings, db: asyncpg.Pool) -> None:
    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 loopback; the IPv6 allowlist cannot be tested")
    running = await start_gateway(gateway_settings, host="::1")
    allowed = await issue_key(db, gateway_settings, ips=["::1", "192.0.2.1"])
    refused = await issue_key(db, gateway_settings, ips=["2001:db8::1", "127.0.0.1"])
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://[::1]:{running.port}{BALANCES}"
            async with http.get(url, headers=bearer(allowed)) as resp:
                assert resp.status == 200
            async with http.get(url, headers=bearer(refused)) as resp:
                assert (await resp.json())["error"] == "INVALID_IP_RESTRICTION"
    finally:
        await running.stop()


async def test_ipv4_allowlist_and_trusted_proxy(settings: Settings, sandbox: RunningApp,
                                                db: asyncpg.Pool) -> None:
    import ipaddress

    live = settings.replace(upstream_url=sandbox.url,
                            trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    running = await start_gateway(live)
    key = await issue_key(db, live, ips=["203.0.113.7"])
    try:
        async with aiohttp.ClientSession() as http:
            async def status(xff: str | None) -> int:
                headers = bearer(key) | ({"X-Forwarded-For": xff} if xff else {})
                async with http.get(running.url + BALANCES, headers=headers) as resp:
                    return resp.status

            assert await status(None) == 403  # the proxy itself is not the client
            assert await status("203.0.113.7") == 200
            assert await status("::ffff:203.0.113.7") == 200  # IPv4-mapped is IPv4
            # The client wrote the left part; the right-most untrusted hop is what counts.
            assert await status("203.0.113.7, 198.51.100.9") == 403
            assert await status("198.51.100.9, 203.0.113.7") == 200
        seen = await last_request(sandbox)
        headers = seen["headers"]
        assert isinstance(headers, dict)
        assert headers["x-forwarded-for"] == "198.51.100.9, 203.0.113.7, 127.0.0.1"
    finally:
        await running.stop()


async def test_100mb_body_streams_through_in_bounded_memory(
    gateway: RunningGateway, gateway_settings: Settings, db: asyncpg.Pool
) -> None:
    key = await issue_key(db, gateway_settings)
    size, chunk = 100 * 1024 * 1024, b"k" * (1024 * 1024)
    sent = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // len(chunk)):
            sent.update(chunk)
            yield chunk

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    received, digest = 0, hashlib.sha256()
    # The gateway, the sandbox and this client share one process: its peak memory bounds all.
    settings = gateway_settings.replace(max_body_size=size)
    running = await start_gateway(settings)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.put(running.url + "/__sandbox/echo", data=body(),
                                headers=bearer(key)) as resp:
                assert resp.status == 200
                async for part in resp.content.iter_chunked(65536):
                    received += len(part)
                    digest.update(part)
    finally:
        await running.stop()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert received == size and digest.digest() == sent.digest()
    assert grown_mb < 40, f"peak memory grew by {grown_mb:.0f} MB for a 100 MB body"


async def test_an_escaped_literal_segment_takes_its_literal_route(
    settings: Settings, sandbox: RunningApp, db: asyncpg.Pool, tmp_path: Path,
) -> None:
    """`%63ancel-all-after` is `cancel-all-after` to the upstream: it must meet the literal
    route's permission, never slip through as an `{order_id}`."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(FIXTURE_ROUTES.read_text().replace(
        '  - {path: "/public/v1/account/orders/{order_id}", methods: [DELETE], permission: trade}',
        '  - {path: "/public/v1/account/orders/{order_id}", methods: [DELETE], permission: trade}\n'
        '  - {path: /public/v1/account/orders/cancel-all-after, methods: [DELETE],'
        ' permission: withdraw}'))
    gateway_settings = settings.replace(upstream_url=sandbox.url, routes_path=routes)
    trader = await issue_key(db, gateway_settings, ["trade"])
    both = await issue_key(db, gateway_settings, ["trade", "withdraw"], user_id=trader.user_id)
    running = await start_gateway(gateway_settings)
    try:
        for escaped in ("%63ancel-all-after", "%63%61ncel-all-after", "cancel%2Dall%2dafter"):
            response = await raw_request(running.port, (
                f"DELETE /public/v1/account/orders/{escaped} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {trader.token}\r\nConnection: close\r\n\r\n").encode())
            assert response.startswith(b"HTTP/1.1 403"), (escaped, response[:200])
            assert b'"MISSING_PERMISSION"' in response and b"withdraw" in response
        response = await raw_request(running.port, (
            "DELETE /public/v1/account/orders/%63ancel-all-after HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {both.token}\r\nConnection: close\r\n\r\n").encode())
        assert not response.startswith(b"HTTP/1.1 403"), response[:200]
        assert (await last_request(sandbox))["path"] == (
            "/public/v1/account/orders/cancel-all-after")  # forwarded decoded, as matched
    finally:
        await running.stop()
