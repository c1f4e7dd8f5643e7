"""Needs: PostgreSQL and Redis (tests/conftest.py), the sandbox exchange with a fast stream.

Stream sessions through the gateway over real WebSocket connections (aiohttp's client): public
channels without a key, AUTHENTICATE and Bearer, each refusal with its code, the ORDERS
channel with a read key and a trade key, what the upstream was sent (never a token, never a
refused message), a second AUTHENTICATE mid-session, an upstream that drops, the upgrade's own
refusals, and the access log and metrics.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from gateway.config.settings import Settings
from gateway.observability.metrics import Metrics
from tests.support.servers import (
    IssuedKey,
    RunningApp,
    RunningGateway,
    bearer,
    issue_key,
    raw_request,
    start_gateway,
)
from tests.support.streams import (
    closed_with,
    collect,
    expect_error,
    next_message,
    receive_json,
    recorded,
    start_stream_sandbox,
    stream_routes,
    stream_settings,
    stream_url,
)

pytestmark = pytest.mark.integration

TICKER = {"name": "MARKET_TICKER", "instrument_codes": ["BTC_EUR"]}
BOOK = {"name": "ORDER_BOOK", "instrument_codes": ["BTC_EUR"], "depth": 3}
HISTORY = {"name": "ACCOUNT_HISTORY"}
ORDER = {"instrument_code": "BTC_EUR", "type": "LIMIT", "side": "BUY", "amount": "0.1",
         "price": "50000"}


@pytest.fixture
async def stream_sandbox() -> AsyncIterator[RunningApp]:
    running = await start_stream_sandbox()
    yield running
    await running.stop()


@pytest.fixture
def live(settings: Settings, stream_sandbox: RunningApp) -> Settings:
    return stream_settings(settings, stream_sandbox)


@pytest.fixture
async def gateway(live: Settings) -> AsyncIterator[RunningGateway]:
    running = await start_gateway(live)
    yield running
    await running.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def subscribe(ws: aiohttp.ClientWebSocketResponse, *channels: dict[str, Any],
                    kind: str = "SUBSCRIBE") -> dict[str, Any]:
    await ws.send_json({"type": kind, "channels": list(channels)})
    return await next_message(ws, "SUBSCRIPTIONS" if kind == "SUBSCRIBE"
                              else "SUBSCRIPTION_UPDATED")


async def authenticate(ws: aiohttp.ClientWebSocketResponse, key: IssuedKey) -> None:
    await ws.send_json({"type": "AUTHENTICATE", "api_token": key.token})
    answer = await next_message(ws, "AUTHENTICATED")
    assert answer["channel_name"] == "SYSTEM" and answer["time"].endswith("Z")


def received_texts(sessions: list[dict[str, Any]]) -> list[str]:
    return [r["text"] for s in sessions for r in s["received"] if "text" in r]


# ---- public channels and authentication ----------------------------------------------------


async def test_public_channels_need_no_key(gateway: RunningGateway,
                                           http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(stream_url(gateway)) as ws:
        answer = await subscribe(ws, TICKER, BOOK)
        assert answer["channels"] == [TICKER, BOOK]
        book = await next_message(ws, "ORDER_BOOK_SNAPSHOT")
        assert len(book["bids"]) == 3
        updates = [m for m in await collect(ws, 0.5) if m["type"] == "MARKET_TICKER_UPDATES"]
        assert len(updates) >= 3


async def test_authenticate_message_opens_private_channels(
    gateway: RunningGateway, http: aiohttp.ClientSession, db: asyncpg.Pool, live: Settings,
    stream_sandbox: RunningApp,
) -> None:
    key = await issue_key(db, live, ["read"])
    async with http.ws_connect(stream_url(gateway)) as ws:
        await authenticate(ws, key)
        await subscribe(ws, HISTORY)
        balances = await next_message(ws, "BALANCES_SNAPSHOT")
        assert {b["currency_code"] for b in balances["balances"]} == {"EUR", "BTC"}
        (session,) = await recorded(http, stream_sandbox)
        headers = session["request"]["headers"]
        assert headers["x-gateway-key-id"] == key.key_id
        assert headers["x-gateway-permissions"] == "read"
        assert balances["account_id"] == headers["x-gateway-account-id"]
        assert "authorization" not in headers


async def test_bearer_on_the_upgrade_authenticates_the_session(
    gateway: RunningGateway, http: aiohttp.ClientSession, db: asyncpg.Pool, live: Settings,
    stream_sandbox: RunningApp,
) -> None:
    key = await issue_key(db, live, ["read"])
    async with http.ws_connect(stream_url(gateway), headers=bearer(key)) as ws:
        # Sent at once, before the answer: the key check holds it, then it goes through.
        await ws.send_json({"type": "SUBSCRIBE", "channels": [HISTORY]})
        await next_message(ws, "AUTHENTICATED")
        await next_message(ws, "SUBSCRIPTIONS")
        await next_message(ws, "BALANCES_SNAPSHOT")
    (session,) = await recorded(http, stream_sandbox)
    assert session["request"]["headers"]["x-gateway-key-id"] == key.key_id
    assert "authorization" not in session["request"]["headers"]


@pytest.mark.parametrize("token", ["not-a-token", "kg_" + "a" * 76, ""])
async def test_a_bad_key_is_refused_then_closed_1008(
    gateway: RunningGateway, http: aiohttp.ClientSession, token: str,
    stream_sandbox: RunningApp,
) -> None:
    async with http.ws_connect(stream_url(gateway)) as ws:
        await ws.send_json({"type": "AUTHENTICATE", "api_token": token})
        await expect_error(ws, "INVALID_APIKEY")
        assert await closed_with(ws) == 1008
    assert await recorded(http, stream_sandbox) == []  # nothing reached the upstream


async def test_a_deleted_key_and_a_bad_bearer_are_refused(
    gateway: RunningGateway, http: aiohttp.ClientSession, db: asyncpg.Pool, live: Settings,
) -> None:
    key = await issue_key(db, live, ["read"])
    forged = key.token[:-12] + ("a" if key.token[-12] != "a" else "b") + key.token[-11:]
    async with http.ws_connect(stream_url(gateway), headers=bearer(forged)) as ws:
        await expect_error(ws, "INVALID_APIKEY")
        assert await closed_with(ws) == 1008


async def test_an_ip_allowlist_is_enforced_with_1008(
    gateway: RunningGateway, http: aiohttp.ClientSession, db: asyncpg.Pool, live: Settings,
) -> None:
    key = await issue_key(db, live, ["read"], ips=["192.0.2.7"])
    async with http.ws_connect(stream_url(gateway)) as ws:
        await ws.send_json({"type": "AUTHENTICATE", "api_token": key.token})
        error = await expect_error(ws, "INVALID_IP_RESTRICTION")
        assert "127.0.0.1" in error["message"]
        assert await closed_with(ws) == 1008


# ---- refusals that leave the session open --------------------------------------------------


async def test_refused_subscriptions_keep_the_session_and_never_reach_the_upstream(
    gateway: RunningGateway, http: aiohttp.ClientSession, db: asyncpg.Pool, live: Settings,
    stream_sandbox: RunningApp,
) -> None:
    key = await issue_key(db, live, ["read"])
    async with http.ws_connect(stream_url(gateway)) as ws:
        await subscribe(ws, TICKER)
        await ws.send_json({"type": "SUBSCRIBE", "channels": [HISTORY]})
        await expect_error(ws, "MISSING_CREDENTIALS")
        await ws.send_json({"type": "SUBSCRIBE", "channels": [TICKER, {"name": "SECRET_FEED"}]})
        error = await expect_error(ws, "INVALID_SUBSCRIPTION")
        assert "SECRET_FEED" in error["message"]
        await ws.send_json({"type": "SUBSCRIBE", "channels": "MARKET_TICKER"})
        await expect_error(ws, "INVALID_SUBSCRIPTION")
        await authenticate(ws, key)
        await next_message(ws, "SUBSCRIPTIONS")  # replayed on the account's own upstream
        await ws.send_json({"type": "UPDATE_SUBSCRIPTION", "channels": [{"name": "ORDERS"}]})
        error = await expect_error(ws, "MISSING_PERMISSION")
        assert "'trade'" in error["message"]
        await ws.send_json({"type": "TRANSFER_EVERYTHING"})
        await expect_error(ws, "MALFORMED_JSON")
        await ws.send_str("not json")
        await expect_error(ws, "MALFORMED_JSON")
        await ws.send_bytes(b"\x00\x01")
        await expect_error(ws, "MALFORMED_JSON")
        await subscribe(ws, HISTORY)  # still open, and still serving
        await next_message(ws, "BALANCES_SNAPSHOT")
    texts = received_texts(await recorded(http, stream_sandbox))
    assert all("ORDERS" not in t and "SECRET_FEED" not in t and "TRANSFER" not in t
               for t in texts), texts
    assert all(json.loads(t)["type"] == "SUBSCRIBE" for t in texts), texts


async def test_orders_with_a_read_key_are_refused_and_with_a_trade_key_go_through(
    gateway: RunningGateway, http: aiohttp.ClientSession, db: asyncpg.Pool, live: Settings,
    stream_sandbox: RunningApp,
) -> None:
    reader = await issue_key(db, live, ["read"])
    trader = await issue_key(db, live, ["read", "trade"], user_id=reader.user_id)
    async with http.ws_connect(stream_url(gateway), headers=bearer(reader)) as ws:
        await next_message(ws, "AUTHENTICATED")
        await ws.send_json({"type": "SUBSCRIBE", "channels": [{"name": "ORDERS"}]})
        await expect_error(ws, "MISSING_PERMISSION")
        await ws.send_json({"type": "CREATE_ORDER", "order": ORDER})
        error = await expect_error(ws, "MISSING_PERMISSION")
        assert "CREATE_ORDER" in error["message"]
        await ws.send_json({"type": "CANCEL_ORDER", "order_id": "whatever"})
        await expect_error(ws, "MISSING_PERMISSION")
    assert received_texts(await recorded(http, stream_sandbox)) == []
    async with http.ws_connect(stream_url(gateway), headers=bearer(trader)) as ws:
        await next_message(ws, "AUTHENTICATED")
        await subscribe(ws, {"name": "ORDERS"})
        await ws.send_json({"type": "CREATE_ORDER", "order": ORDER})
        created = await next_message(ws, "ORDER_CREATED")
        await ws.send_json({"type": "CANCEL_ORDER", "order_id": created["order"]["order_id"]})
        await next_message(ws, "ORDER_SUBMITTED_FOR_CANCELLATION")
    async with http.get(gateway.url + "/public/v1/account/orders", headers=bearer(reader),
                        params={"with_cancelled_and_rejected": "true"}) as response:
        assert response.status == 200  # the same account, seen over REST


async def test_the_token_never_reaches_the_upstream(
    gateway: RunningGateway, http: aiohttp.ClientSession, db: asyncpg.Pool, live: Settings,
    stream_sandbox: RunningApp,
) -> None:
    key = await issue_key(db, live, ["read", "trade"])
    async with http.ws_connect(stream_url(gateway), headers=bearer(key)) as ws:
        await next_message(ws, "AUTHENTICATED")
        await subscribe(ws, TICKER)
        await authenticate(ws, key)  # again, mid-session
        # A token smuggled into a forwarded message is refused, not passed on.
        await ws.send_json({"type": "SUBSCRIBE", "channels": [TICKER], "api_token": key.token})
        await expect_error(ws, "MALFORMED_JSON")
        await ws.send_json({"type": "CREATE_ORDER", "order": {**ORDER, "client_id": key.token}})
        await expect_error(ws, "MALFORMED_JSON")
        await subscribe(ws, {"name": "TRADING"})
    sessions = await recorded(http, stream_sandbox)
    assert sessions, "the upstream saw the session"
    dump = json.dumps(sessions)
    # SECURITY: neither the token nor its secret, in any message or upgrade header.
    assert key.token not in dump and key.token.split("_")[2][:20] not in dump
    assert "AUTHENTICATE" not in dump


async def test_a_second_authenticate_moves_the_session_to_the_new_account(
    gateway: RunningGateway, http: aiohttp.ClientSession, db: asyncpg.Pool, live: Settings,
    stream_sandbox: RunningApp,
) -> None:
    alice = await issue_key(db, live, ["read"])
    bob = await issue_key(db, live, ["read"])
    async with http.ws_connect(stream_url(gateway)) as ws:
        await authenticate(ws, alice)
        await subscribe(ws, TICKER, HISTORY)
        first = await next_message(ws, "BALANCES_SNAPSHOT")
        await ws.send_json({"type": "AUTHENTICATE", "api_token": bob.token})
        skipped: list[dict[str, Any]] = []
        await next_message(ws, "AUTHENTICATED", skipped=skipped)
        # Replayed on the new account's upstream session: both channels, a fresh snapshot.
        answer = await next_message(ws, "SUBSCRIPTIONS")
        assert [c["name"] for c in answer["channels"]] == ["MARKET_TICKER", "ACCOUNT_HISTORY"]
        second = await next_message(ws, "BALANCES_SNAPSHOT")
        assert second["account_id"] != first["account_id"]
        await next_message(ws, "MARKET_TICKER_UPDATES")
    await asyncio.sleep(0.1)
    old, new = await recorded(http, stream_sandbox)
    assert old["request"]["headers"]["x-gateway-key-id"] == alice.key_id
    assert new["request"]["headers"]["x-gateway-key-id"] == bob.key_id
    assert old["closed_at"] is not None


async def test_a_weaker_second_key_drops_the_channels_it_may_not_have(
    gateway: RunningGateway, http: aiohttp.ClientSession, db: asyncpg.Pool, live: Settings,
) -> None:
    reader = await issue_key(db, live, ["read"])
    other = await issue_key(db, live, ["trade"])
    async with http.ws_connect(stream_url(gateway), headers=bearer(reader)) as ws:
        await next_message(ws, "AUTHENTICATED")
        await subscribe(ws, TICKER, HISTORY)
        await ws.send_json({"type": "AUTHENTICATE", "api_token": other.token})
        error = await next_message(ws, "ERROR")  # the first account's snapshots before it
        assert error["error"] == "MISSING_PERMISSION" and "ACCOUNT_HISTORY" in error["message"]
        await next_message(ws, "AUTHENTICATED")
        answer = await next_message(ws, "SUBSCRIPTIONS")
        assert [c["name"] for c in answer["channels"]] == ["MARKET_TICKER"]


# ---- the upstream ends -----------------------------------------------------------------------


async def test_an_upstream_that_drops_mid_stream_ends_the_session_1011(
    gateway: RunningGateway, http: aiohttp.ClientSession, stream_sandbox: RunningApp,
) -> None:
    async with http.ws_connect(stream_url(gateway)) as ws:
        await subscribe(ws, TICKER)
        async with http.post(stream_sandbox.url + "/__sandbox/streams/drop") as response:
            assert await response.json() == {"dropped": 1}
        await expect_error(ws, "SERVICE_UNAVAILABLE")
        assert await closed_with(ws) == 1011


async def test_an_upstream_that_closes_passes_its_close_on(
    gateway: RunningGateway, http: aiohttp.ClientSession, stream_sandbox: RunningApp,
) -> None:
    async with http.ws_connect(stream_url(gateway)) as ws:
        await subscribe(ws, TICKER)
        url = stream_sandbox.url + "/__sandbox/streams/drop?how=close&code=1012"
        async with http.post(url) as response:
            assert await response.json() == {"dropped": 1}
        await next_message(ws, "CONNECTION_CLOSING")
        assert await closed_with(ws) == 1012


async def test_an_unreachable_upstream_is_service_unavailable(
    settings: Settings, http: aiohttp.ClientSession, stream_sandbox: RunningApp,
) -> None:
    from tests.support.services import free_port

    dead = stream_settings(settings, stream_sandbox,
                           stream_upstream_url=f"ws://127.0.0.1:{free_port()}/streams")
    running = await start_gateway(dead)
    try:
        async with http.ws_connect(stream_url(running)) as ws:
            await ws.send_json({"type": "SUBSCRIBE", "channels": [TICKER]})
            await expect_error(ws, "SERVICE_UNAVAILABLE")
            assert await closed_with(ws) == 1011
    finally:
        await running.stop()


# ---- the upgrade itself ----------------------------------------------------------------------


async def test_a_plain_get_on_a_stream_path_is_told_to_upgrade(
    gateway: RunningGateway, http: aiohttp.ClientSession,
) -> None:
    async with http.get(gateway.url + "/streams") as response:
        assert response.status == 426
        assert response.headers["Upgrade"] == "websocket"
        body = await response.json()
        assert body["error"] == "ROUTE_NOT_FOUND" and "WebSocket" in body["message"]
        assert response.headers["X-Request-Id"] == body["request_id"]


@pytest.mark.parametrize(("headers", "status"), [
    (b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", 426),
    (b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n", 400),
    (b"Sec-WebSocket-Version: 13\r\n", 400),
])
async def test_a_bad_handshake_is_refused_and_closed(gateway: RunningGateway, headers: bytes,
                                                     status: int) -> None:
    request = (b"GET /streams HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\n" + headers + b"\r\n")
    answer = await raw_request(gateway.port, request, until_closed=True)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer
    assert b"Connection: close\r\n" in answer


async def test_frames_sent_with_the_upgrade_are_read(gateway: RunningGateway) -> None:
    """A client may send its first frame right behind the upgrade request."""
    frame = _masked_text(json.dumps({"type": "SUBSCRIBE", "channels": [TICKER]}))
    request = (b"GET /streams HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" + frame)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head  # RFC 6455
        data = b""
        while b"SUBSCRIPTIONS" not in data:
            data += await asyncio.wait_for(reader.read(65536), 3)
    finally:
        writer.close()


def _masked_text(text: str) -> bytes:
    payload = text.encode()
    mask = b"\x01\x02\x03\x04"
    assert len(payload) < 126
    return (bytes([0x81, 0x80 | len(payload)]) + mask
            + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


# ---- what is recorded ------------------------------------------------------------------------


async def test_sessions_and_refusals_are_logged_and_counted(
    live: Settings, http: aiohttp.ClientSession, db: asyncpg.Pool,
) -> None:
    running = await start_gateway(live)
    log = io.StringIO()
    running.services.access_log._stream = log
    metrics = Metrics.get()

    def refusals(code: str) -> float:
        return metrics.stream_refusals.labels("/streams", code)._value.get()

    before = refusals("MISSING_CREDENTIALS")
    try:
        key = await issue_key(db, live, ["read"])
        async with http.ws_connect(stream_url(running)) as ws:
            await ws.send_json({"type": "SUBSCRIBE", "channels": [HISTORY]})
            await expect_error(ws, "MISSING_CREDENTIALS")
            await authenticate(ws, key)
            await subscribe(ws, TICKER)
            await receive_json(ws)
        await asyncio.sleep(0.3)
    finally:
        await running.stop()
    lines = log.getvalue().splitlines()
    assert any('"SUBSCRIBE /streams" 401 MISSING_CREDENTIALS' in line for line in lines), lines
    (ended,) = [line for line in lines if '"GET /streams" 101' in line]
    assert f"key={key.key_id}" in ended
    assert key.token not in log.getvalue()
    assert refusals("MISSING_CREDENTIALS") == before + 1
    assert metrics.stream_messages.labels("/streams", "in")._value.get() >= 2
    assert metrics.stream_messages.labels("/streams", "out")._value.get() >= 3


async def test_stream_routes_are_reloaded_like_routes(
    settings: Settings, stream_sandbox: RunningApp, http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    routes = tmp_path / "routes.yaml"
    shipped = stream_settings(settings, stream_sandbox).routes_path
    original = Path(shipped).read_text()  # noqa: ASYNC240 (a small file)
    routes.write_text(original)
    running = await start_gateway(stream_settings(settings, stream_sandbox,
                                                  routes_path=routes))
    try:
        routes.write_text(original.replace("        ORDER_BOOK: public\n", ""))
        assert running.services.reload_routes()
        async with http.ws_connect(stream_url(running)) as ws:
            await ws.send_json({"type": "SUBSCRIBE", "channels": [BOOK]})
            await expect_error(ws, "INVALID_SUBSCRIPTION")
        routes.write_text(original.replace("ORDER_BOOK: public", "ORDER_BOOK: nonsense"))
        assert not running.services.reload_routes()  # refused: the running table stays
        async with http.ws_connect(stream_url(running)) as ws:
            await ws.send_json({"type": "SUBSCRIBE", "channels": [BOOK]})
            await expect_error(ws, "INVALID_SUBSCRIPTION")
            await subscribe(ws, TICKER)
    finally:
        await running.stop()


async def test_tls_on_both_legs(settings: Settings, db: asyncpg.Pool, tmp_path: Path) -> None:
    """wss:// to the gateway (TLS in the process) and wss:// from it to the upstream, verified
    against the upstream CA file REST uses."""
    import ssl

    from aiohttp import web

    from sandbox import build_sandbox_app
    from tests.support.tls import self_signed

    cert, key_file = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key_file)
    runner = web.AppRunner(build_sandbox_app(stream_tick=0.05), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    live = settings.replace(routes_path=stream_routes(settings),
                            upstream_url=f"https://localhost:{port}",
                            stream_upstream_url=f"wss://localhost:{port}/streams",
                            upstream_ca_file=cert, tls_cert=cert, tls_key=key_file)
    running = await start_gateway(live)
    client_tls = ssl.create_default_context(cafile=str(cert))
    try:
        token = await issue_key(db, live, ["read"])
        async with aiohttp.ClientSession() as http, http.ws_connect(
                f"wss://localhost:{running.port}/streams", ssl=client_tls) as ws:
            await authenticate(ws, token)
            await subscribe(ws, TICKER, HISTORY)
            await next_message(ws, "BALANCES_SNAPSHOT")
        # Without the CA file, the upstream's certificate is refused: fail closed.
        untrusting = await start_gateway(live.replace(upstream_ca_file=None))
        try:
            async with aiohttp.ClientSession() as http, http.ws_connect(
                    f"wss://localhost:{untrusting.port}/streams", ssl=client_tls) as ws:
                await ws.send_json({"type": "SUBSCRIBE", "channels": [TICKER]})
                await expect_error(ws, "SERVICE_UNAVAILABLE")
        finally:
            await untrusting.stop()
    finally:
        await running.stop()
        await runner.cleanup()
