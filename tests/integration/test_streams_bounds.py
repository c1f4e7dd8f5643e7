"""Needs: PostgreSQL and Redis (tests/conftest.py), the sandbox exchange with a fast stream.

The bounds of a stream session, each a setting, over real connections: message size (1009,
never forwarded), messages per second, sessions per key and per client address, the idle
timeout (ping/pong), and backpressure: a client that does not read pauses its upstream, and
one that stays behind too long is cut.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from gateway.config.settings import Settings
from sandbox.market import INSTRUMENTS
from tests.support.servers import RunningApp, bearer, issue_key, start_gateway
from tests.support.streams import (
    close_of,
    closed_with,
    expect_error,
    next_message,
    recorded,
    start_stream_sandbox,
    stream_settings,
    stream_url,
)

pytestmark = pytest.mark.integration

TICKER = {"name": "MARKET_TICKER", "instrument_codes": ["BTC_EUR"]}


@pytest.fixture
async def stream_sandbox() -> AsyncIterator[RunningApp]:
    running = await start_stream_sandbox()
    yield running
    await running.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def padded(size: int) -> str:
    """A SUBSCRIBE of exactly `size` bytes."""
    shell = json.dumps({"type": "SUBSCRIBE", "channels": [TICKER], "pad": ""})
    return shell.replace('"pad": ""', '"pad": "' + "x" * (size - len(shell)) + '"')


async def test_a_message_over_the_size_bound_is_closed_1009_and_never_forwarded(
    settings: Settings, stream_sandbox: RunningApp, http: aiohttp.ClientSession,
) -> None:
    limit = settings.stream_max_message_size
    assert limit == 1024 * 1024  # the default under test
    running = await start_gateway(stream_settings(settings, stream_sandbox))
    try:
        async with http.ws_connect(stream_url(running), max_msg_size=0) as ws:
            await ws.send_json({"type": "SUBSCRIBE", "channels": [TICKER]})
            await next_message(ws, "SUBSCRIPTIONS")
            await ws.send_str(padded(limit + 1))
            code, reason = await close_of(ws, timeout=5)
            assert (code, "at most" in reason) == (1009, True)  # the gateway's own close
        await asyncio.sleep(0.1)
        (session,) = await recorded(http, stream_sandbox)
        assert [len(r["text"]) for r in session["received"]] == [len(json.dumps(
            {"type": "SUBSCRIBE", "channels": [TICKER]}))]
    finally:
        await running.stop()


async def test_a_message_of_exactly_the_bound_is_passed_on(
    settings: Settings, stream_sandbox: RunningApp, http: aiohttp.ClientSession,
) -> None:
    limit = 64 * 1024
    running = await start_gateway(stream_settings(settings, stream_sandbox,
                                                  stream_max_message_size=limit))
    try:
        async with http.ws_connect(stream_url(running)) as ws:
            await ws.send_str(padded(limit))
            await next_message(ws, "SUBSCRIPTIONS", timeout=5)
            await ws.send_str(padded(limit + 1))
            assert await closed_with(ws, timeout=5) == 1009
        await asyncio.sleep(0.1)
        (session,) = await recorded(http, stream_sandbox)
        assert [len(r["text"]) for r in session["received"]] == [limit]
    finally:
        await running.stop()


async def test_messages_past_the_rate_are_refused_and_the_session_stays(
    settings: Settings, stream_sandbox: RunningApp, http: aiohttp.ClientSession,
) -> None:
    running = await start_gateway(stream_settings(settings, stream_sandbox,
                                                  stream_messages_per_second=5.0))
    unsubscribe = {"type": "UNSUBSCRIBE", "channels": ["PRICE_TICKS"]}
    try:
        async with http.ws_connect(stream_url(running)) as ws:
            for _ in range(12):
                await ws.send_json(unsubscribe)
            kinds: list[str] = []
            while len(kinds) < 12:
                message = await next_message(ws, "UNSUBSCRIBED", skipped=(skipped := []))
                kinds += [m.get("error", m["type"]) for m in skipped] + ["UNSUBSCRIBED"]
                if kinds.count("RATELIMIT") == 12 - 5:
                    kinds += ["UNSUBSCRIBED"] * (12 - len(kinds))
            assert kinds.count("RATELIMIT") >= 6, kinds  # a burst of 5, give or take a refill
            await asyncio.sleep(0.5)
            await ws.send_json(unsubscribe)  # the bucket refilled: served again
            await next_message(ws, "UNSUBSCRIBED")
            assert message["type"] == "UNSUBSCRIBED"
        (session,) = await recorded(http, stream_sandbox)
        assert len(session["received"]) <= 12 - kinds.count("RATELIMIT") + 1
    finally:
        await running.stop()


async def test_sessions_per_key_are_capped(
    settings: Settings, stream_sandbox: RunningApp, http: aiohttp.ClientSession,
    db: asyncpg.Pool,
) -> None:
    live = stream_settings(settings, stream_sandbox, stream_max_sessions_per_key=2)
    running = await start_gateway(live)
    key = await issue_key(db, live, ["read"])
    try:
        first = await http.ws_connect(stream_url(running), headers=bearer(key))
        await next_message(first, "AUTHENTICATED")
        async with http.ws_connect(stream_url(running), headers=bearer(key)) as second:
            await next_message(second, "AUTHENTICATED")
            async with http.ws_connect(stream_url(running)) as third:
                await third.send_json({"type": "AUTHENTICATE", "api_token": key.token})
                await expect_error(third, "RATELIMIT")
                assert await closed_with(third) == 1008
        await first.close()
        await asyncio.sleep(0.1)
        async with http.ws_connect(stream_url(running), headers=bearer(key)) as again:
            await next_message(again, "AUTHENTICATED")  # a closed session freed its place
    finally:
        await running.stop()


async def test_sessions_per_client_address_are_capped_at_the_upgrade(
    settings: Settings, stream_sandbox: RunningApp, http: aiohttp.ClientSession,
) -> None:
    running = await start_gateway(stream_settings(settings, stream_sandbox,
                                                  stream_max_sessions_per_ip=2))
    try:
        held = [await http.ws_connect(stream_url(running)) for _ in range(2)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(stream_url(running))
        assert refused.value.status == 429
        async with http.get(running.url + "/healthz") as response:
            assert response.status == 200  # HTTP on the same address is not held back
        await held[0].close()
        await asyncio.sleep(0.1)
        async with http.ws_connect(stream_url(running)) as ws:
            await ws.send_json({"type": "SUBSCRIBE", "channels": [TICKER]})
            await next_message(ws, "SUBSCRIPTIONS")
        await held[1].close()
    finally:
        await running.stop()


async def test_a_silent_client_is_closed_and_one_that_answers_pings_stays(
    settings: Settings, stream_sandbox: RunningApp, http: aiohttp.ClientSession,
) -> None:
    running = await start_gateway(stream_settings(settings, stream_sandbox,
                                                  stream_idle_timeout=0.6))
    loop = asyncio.get_running_loop()
    try:
        async with http.ws_connect(stream_url(running), autoping=False) as silent, \
                http.ws_connect(stream_url(running)) as alive:
            # aiohttp answers pings while it reads: this client reads all along.
            await alive.send_json({"type": "SUBSCRIBE", "channels": [TICKER]})
            reading = asyncio.create_task(_read_all(alive))
            started = loop.time()
            message = await silent.receive(timeout=3)
            assert message.type is aiohttp.WSMsgType.PING  # at half the timeout
            message = await silent.receive(timeout=3)
            assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1001)
            assert 0.55 <= loop.time() - started <= 1.5
            await asyncio.sleep(0.8)  # past the timeout: its pongs kept it open
            assert not reading.done() and not alive.closed
            reading.cancel()
    finally:
        await running.stop()


async def test_a_client_that_does_not_read_pauses_its_upstream_then_is_cut(
    settings: Settings, stream_sandbox: RunningApp, http: aiohttp.ClientSession,
) -> None:
    live = stream_settings(settings, stream_sandbox, stream_send_buffer=16 * 1024,
                           stream_send_timeout=1.0)
    running = await start_gateway(live)
    gate = running.listening.edge.streams
    every: list[dict[str, Any]] = [{"name": "ORDER_BOOK", "instrument_codes": list(INSTRUMENTS),
                                    "depth": 0}]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that never reads
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", running.port))
        await loop.sock_sendall(sock, _upgrade() + _masked_text(json.dumps(
            {"type": "SUBSCRIBE", "channels": every})))
        deadline = loop.time() + 10
        while not gate.sessions and loop.time() < deadline:  # noqa: ASYNC110 (polled state)
            await asyncio.sleep(0.01)
        (session,) = gate.sessions
        # A slow link: the kernel's own send buffer, kept small, fills at once.
        session.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        was_paused = False
        while session in gate.sessions and loop.time() < deadline:
            leg = session.upstream
            if leg is not None and leg.transport is not None:
                was_paused = was_paused or not leg.transport.is_reading()
            await asyncio.sleep(0.02)
        assert was_paused, "the upstream was never paused"
        assert session not in gate.sessions, "the slow client was never cut"
        assert session.end_code == "SLOW_CLIENT"
        await asyncio.sleep(0.1)
        (upstream,) = await recorded(http, stream_sandbox)
        assert upstream["closed_at"] is not None  # its upstream session ended with it
    finally:
        sock.close()
        await running.stop()


async def _read_all(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for _ in ws:
        pass


def _upgrade() -> bytes:
    return (b"GET /streams HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


def _masked_text(text: str) -> bytes:
    payload = text.encode()
    mask = b"\x01\x02\x03\x04"
    length = len(payload)
    head = bytes([0x81, 0x80 | length]) if length < 126 else (
        bytes([0x81, 0x80 | 126]) + length.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
