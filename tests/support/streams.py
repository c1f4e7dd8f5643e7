"""Helpers for stream tests: the sandbox with a fast stream, settings that point the gateway's
streams at it, and reading a WebSocket message by message."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from gateway.config.settings import Settings
from sandbox import build_sandbox_app
from tests.support.servers import RunningApp, RunningGateway, start_app

__all__ = ["STREAMS", "TICK", "close_of", "closed_with", "collect", "expect_error", "next_message",
           "receive_json", "recorded", "start_stream_sandbox", "stream_routes", "stream_settings",
           "stream_url"]

TICK = 0.05
MARKET = frozenset({"HEARTBEAT", "MARKET_TICKER_UPDATES", "ORDER_BOOK_UPDATE", "PRICE_TICK",
                    "CANDLESTICK"})


async def start_stream_sandbox() -> RunningApp:
    """The sandbox with fast ticks and heartbeats, so a test sees a steady stream at once."""
    return await start_app(build_sandbox_app(stream_tick=TICK, stream_heartbeat=0.25))


# The shipped stream route, added to the tests' route table (its routes stay last there).
STREAMS = """
streams:
  upstream: ws://127.0.0.1:9000/streams
  routes:
    - path: /streams
      channels:
        MARKET_TICKER: public
        ORDER_BOOK: public
        PRICE_TICKS: public
        CANDLESTICKS: public
        ACCOUNT_HISTORY: read
        TRADING: read
        ORDERS: trade
      messages:
        CREATE_ORDER: trade
        CANCEL_ORDER: trade
"""


def stream_routes(settings: Settings) -> Path:
    """The tests' route table with the stream route added, beside the test's data folder."""
    routes = settings.data_dir.parent / "routes-streams.yaml"
    if not routes.exists():
        routes.write_text(Path(settings.routes_path).read_text() + STREAMS)
    return routes


def stream_settings(settings: Settings, sandbox: RunningApp, **changes: Any) -> Settings:
    """`settings` with a route table that has the stream route, and the gateway's REST and
    stream upstreams both on `sandbox`."""
    return settings.replace(**{"upstream_url": sandbox.url, "routes_path": stream_routes(settings),
                               "stream_upstream_url": f"ws://127.0.0.1:{sandbox.port}/streams",
                               **changes})


def stream_url(gateway: RunningGateway | str) -> str:
    base = gateway if isinstance(gateway, str) else gateway.url
    return base.replace("http://", "ws://").replace("https://", "wss://") + "/streams"


async def receive_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 3.0) -> Any:
    message = await ws.receive(timeout=timeout)
    assert message.type is aiohttp.WSMsgType.TEXT, (message.type, message.data, message.extra)
    return json.loads(message.data)


async def next_message(ws: aiohttp.ClientWebSocketResponse, kind: str, *,
                       timeout: float = 3.0,
                       skipped: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The next message of type `kind`; the ones before it go to `skipped`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await receive_json(ws, timeout=max(0.01, deadline - loop.time()))
        if message.get("type") == kind:
            return dict(message)
        if skipped is not None:
            skipped.append(message)


async def expect_error(ws: aiohttp.ClientWebSocketResponse, code: str,
                       timeout: float = 3.0) -> dict[str, Any]:
    """The next ERROR (market data before it skipped): the contract's shape, with `code`."""
    skipped: list[dict[str, Any]] = []
    error = await next_message(ws, "ERROR", timeout=timeout, skipped=skipped)
    assert (error["error"], error["channel_name"]) == (code, "SYSTEM"), error
    assert isinstance(error["time"], str) and error["time"].endswith("Z")
    assert all(m["type"] in MARKET for m in skipped), skipped
    return error


async def closed_with(ws: aiohttp.ClientWebSocketResponse, timeout: float = 3.0) -> int:
    """The close code the server ends with (market data before the close skipped)."""
    return (await close_of(ws, timeout))[0]


async def close_of(ws: aiohttp.ClientWebSocketResponse,
                   timeout: float = 3.0) -> tuple[int, str]:
    """The close code and reason the server ends with (market data before it skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await ws.receive(timeout=max(0.01, deadline - loop.time()))
        if message.type is aiohttp.WSMsgType.TEXT:
            kind = json.loads(message.data).get("type")
            assert kind in MARKET | {"CONNECTION_CLOSING"}, message.data
            continue
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), message
        code = ws.close_code if ws.close_code is not None else message.data
        return int(code), str(message.extra or "")


async def collect(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[dict[str, Any]]:
    """Every text message received within `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    seen: list[dict[str, Any]] = []
    while (left := deadline - loop.time()) > 0:
        try:
            message = await ws.receive(timeout=left)
        except TimeoutError:
            break
        if message.type is not aiohttp.WSMsgType.TEXT:
            break
        seen.append(json.loads(message.data))
    return seen


async def recorded(http: aiohttp.ClientSession, sandbox: RunningApp) -> list[dict[str, Any]]:
    """The sandbox's record of its stream sessions: upgrade requests, messages received."""
    async with http.get(sandbox.url + "/__sandbox/streams") as response:
        assert response.status == 200
        sessions: list[dict[str, Any]] = (await response.json())["sessions"]
        return sessions
