"""Needs: nothing but the sandbox exchange, served on a free port. Its WebSocket streams over
real connections (aiohttp's client): each channel's answer and first messages, the identity
the gateway's headers give a session, orders over the ORDERS channel as seen over REST, account
updates, heartbeats, the drop hook, and the recording of what clients sent."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from sandbox import build_sandbox_app
from sandbox.appkeys import STREAM_HUB_KEY
from sandbox.streams import session as session_module
from tests.support.servers import RunningApp, start_app

API = "/public/v1"
ALICE = {"X-Gateway-Account-Id": "alice"}
BOB = {"X-Gateway-Account-Id": "bob"}
TICK = 0.05
HEARTBEAT = 0.25
NOT_MARKET = frozenset({"HEARTBEAT"})
ORDER_BOOK = {"name": "ORDER_BOOK", "instrument_codes": ["BTC_EUR"], "depth": 3}
MARKET_TICKER = {"name": "MARKET_TICKER", "instrument_codes": ["BTC_EUR", "ETH_EUR"]}
PRICE_TICKS = {"name": "PRICE_TICKS", "instrument_codes": ["ETH_EUR"]}
CANDLESTICKS = {
    "name": "CANDLESTICKS",
    "properties": [
        {"instrument_code": "BTC_EUR", "time_granularity": {"unit": "MINUTES", "period": 1}}
    ],
}


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningApp]:
    """The sandbox with fast ticks and heartbeats, so a test sees a steady stream at once."""
    running = await start_app(build_sandbox_app(stream_tick=TICK, stream_heartbeat=HEARTBEAT))
    yield running
    await running.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def ws_url(sandbox: RunningApp) -> str:
    return f"ws://127.0.0.1:{sandbox.port}/streams"


async def receive_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 3.0) -> Any:
    message = await ws.receive(timeout=timeout)
    assert message.type is aiohttp.WSMsgType.TEXT, (message.type, message.data)
    return json.loads(message.data)


async def next_message(
    ws: aiohttp.ClientWebSocketResponse, kind: str, *, timeout: float = 3.0,
    skipped: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The next message of type `kind`; the ones before it go to `skipped`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await receive_json(ws, timeout=max(0.01, deadline - loop.time()))
        if message.get("type") == kind:
            return dict(message)
        if skipped is not None:
            skipped.append(message)


async def collect(
    ws: aiohttp.ClientWebSocketResponse, seconds: float, ignore: frozenset[str] = NOT_MARKET
) -> list[dict[str, Any]]:
    """Every message received in `seconds`, minus the types in `ignore`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    seen: list[dict[str, Any]] = []
    while (left := deadline - loop.time()) > 0:
        try:
            message = await ws.receive(timeout=left)
        except TimeoutError:
            break
        assert message.type is aiohttp.WSMsgType.TEXT, (message.type, message.data)
        parsed = json.loads(message.data)
        if parsed.get("type") not in ignore:
            seen.append(parsed)
    return seen


async def subscribe(ws: aiohttp.ClientWebSocketResponse, *channels: dict[str, Any]) -> Any:
    await ws.send_json({"type": "SUBSCRIBE", "channels": list(channels)})
    return await next_message(ws, "SUBSCRIPTIONS")


async def expect_error(ws: aiohttp.ClientWebSocketResponse, code: str) -> dict[str, Any]:
    error = await next_message(ws, "ERROR")
    assert (error["error"], error["channel_name"]) == (code, "SYSTEM"), error
    assert isinstance(error["time"], str)
    return error


async def rest(
    http: aiohttp.ClientSession, sandbox: RunningApp, method: str, path: str, status: int,
    **kwargs: Any,
) -> Any:
    async with http.request(method, sandbox.url + API + path, **kwargs) as response:
        assert response.status == status, await response.text()
        return await response.json() if response.status != 204 else None


async def balances(
    http: aiohttp.ClientSession, sandbox: RunningApp
) -> dict[str, tuple[Decimal, Decimal]]:
    """Alice's (available, locked) per currency, over REST."""
    body = await rest(http, sandbox, "GET", "/account/balances", 200, headers=ALICE)
    return {b["currency_code"]: (Decimal(b["available"]), Decimal(b["locked"]))
            for b in body["balances"]}


def limit_buy(**extra: object) -> dict[str, object]:
    return {"instrument_code": "BTC_EUR", "type": "LIMIT", "side": "BUY", "amount": "0.1",
            "price": "50000", **extra}


# ---- public channels -------------------------------------------------------------------------


@pytest.mark.parametrize(("channel", "first", "update"), [
    (ORDER_BOOK, "ORDER_BOOK_SNAPSHOT", "ORDER_BOOK_UPDATE"),
    (MARKET_TICKER, "MARKET_TICKER_UPDATES", "MARKET_TICKER_UPDATES"),
    (PRICE_TICKS, "PRICE_TICK_HISTORY", "PRICE_TICK"),
    (CANDLESTICKS, "CANDLESTICK_SNAPSHOT", "CANDLESTICK"),
])
async def test_public_channel_answer_first_message_and_updates(
    sandbox: RunningApp, http: aiohttp.ClientSession, channel: dict[str, Any], first: str,
    update: str,
) -> None:
    async with http.ws_connect(ws_url(sandbox)) as ws:  # no account: public data needs none
        await ws.send_json({"type": "SUBSCRIBE", "channels": [channel]})
        answer = await receive_json(ws)
        assert answer["type"] == "SUBSCRIPTIONS"
        assert answer["channels"] == [channel]  # echoed with the exchange's own field names
        opening = await next_message(ws, first)
        assert opening["channel_name"] == channel["name"]
        updates = [m for m in await collect(ws, 6 * TICK) if m["type"] == update]
        assert len(updates) >= 2
        assert all(m["channel_name"] == channel["name"] for m in updates)


async def test_order_book_snapshot_then_updates_of_its_levels(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox)) as ws:
        await subscribe(ws, ORDER_BOOK)
        book = await next_message(ws, "ORDER_BOOK_SNAPSHOT")
        assert book["instrument_code"] == "BTC_EUR"
        assert len(book["bids"]) == len(book["asks"]) == 3
        bids = [Decimal(price) for price, _ in book["bids"]]
        asks = [Decimal(price) for price, _ in book["asks"]]
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
        assert bids[0] < Decimal("60000") < asks[0]  # around the sandbox's fixed price
        levels = {("BUY", price) for price, _ in book["bids"]} | {
            ("SELL", price) for price, _ in book["asks"]}
        for _ in range(4):
            change = await next_message(ws, "ORDER_BOOK_UPDATE")
            for side, price, amount in change["changes"]:
                assert (side, price) in levels
                assert Decimal(amount) > 0


async def test_market_data_ticks_at_the_configured_rate(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox)) as ws:
        await subscribe(ws, PRICE_TICKS)
        ticks = [m for m in await collect(ws, 1.0) if m["type"] == "PRICE_TICK"]
        # 20 at exactly one per TICK; a loaded machine may lose a few.
        assert 10 <= len(ticks) <= 22, len(ticks)
        sequences = [m["sequence"] for m in ticks]
        assert sequences == list(range(sequences[0], sequences[0] + len(ticks)))
        for tick in ticks:
            assert tick["instrument_code"] == "ETH_EUR"
            assert abs(Decimal(tick["price"]) - Decimal("3000")) <= 3  # within 0.1 %


def test_default_app_ticks_about_once_a_second() -> None:
    hub = build_sandbox_app()[STREAM_HUB_KEY]
    assert (hub.interval, hub.heartbeat) == (1.0, 10.0)


async def test_price_tick_history_holds_the_ticks_already_sent(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    await asyncio.sleep(15 * TICK)
    async with http.ws_connect(ws_url(sandbox)) as ws:
        await subscribe(ws, PRICE_TICKS)
        history = await next_message(ws, "PRICE_TICK_HISTORY")
        assert len(history["history"]) == 10
        sequences = [tick["sequence"] for tick in history["history"]]
        assert sequences == sorted(sequences, reverse=True)  # newest first
        live = await next_message(ws, "PRICE_TICK")
        assert live["sequence"] == sequences[0] + 1  # no gap, no repeat


async def test_update_subscription_and_unsubscribe(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox)) as ws:
        await subscribe(ws, ORDER_BOOK)
        await next_message(ws, "ORDER_BOOK_SNAPSHOT")
        both = {**ORDER_BOOK, "instrument_codes": ["BTC_EUR", "ETH_EUR"]}
        await ws.send_json({"type": "UPDATE_SUBSCRIPTION", "channels": [both]})
        skipped: list[dict[str, Any]] = []
        updated = await next_message(ws, "SUBSCRIPTION_UPDATED", skipped=skipped)
        assert updated["channels"] == [both]
        seen = await collect(ws, 6 * TICK)
        snapshots = [m["instrument_code"] for m in seen if m["type"] == "ORDER_BOOK_SNAPSHOT"]
        assert snapshots == ["ETH_EUR"]  # only the new instrument starts from a snapshot
        updated_codes = {m["instrument_code"] for m in seen if m["type"] == "ORDER_BOOK_UPDATE"}
        assert updated_codes == {"BTC_EUR", "ETH_EUR"}

        await ws.send_json({"type": "UNSUBSCRIBE", "channels": ["ORDER_BOOK"]})
        gone = await next_message(ws, "UNSUBSCRIBED")
        assert gone["channels"] == ["ORDER_BOOK"]
        assert await collect(ws, 5 * TICK) == []


async def test_subscriptions_lists_every_channel_of_the_session(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox), headers=ALICE) as ws:
        await subscribe(ws, PRICE_TICKS)
        answer = await subscribe(ws, {"name": "ACCOUNT_HISTORY"})
        assert [c["name"] for c in answer["channels"]] == ["PRICE_TICKS", "ACCOUNT_HISTORY"]


@pytest.mark.parametrize(("sent", "code"), [
    ("not json", "MALFORMED_JSON"),
    ("[1, 2]", "MALFORMED_JSON"),
    ('{"type": "PING"}', "MALFORMED_JSON"),
    ('{"channels": []}', "MALFORMED_JSON"),
    ('{"type": "SUBSCRIBE"}', "INVALID_SUBSCRIPTION"),
    ('{"type": "SUBSCRIBE", "channels": [{"name": "NOPE"}]}', "INVALID_SUBSCRIPTION"),
    ('{"type": "SUBSCRIBE", "channels": [{"name": "ORDER_BOOK"}]}', "INVALID_SUBSCRIPTION"),
    ('{"type": "SUBSCRIBE", "channels": [{"name": "ORDER_BOOK", "instrument_codes": ["X_Y"]}]}',
     "INVALID_INSTRUMENT_CODE"),
    ('{"type": "SUBSCRIBE", "channels": [{"name": "ORDER_BOOK", "instrument_codes": ["BTC_EUR"],'
     ' "depth": -1}]}', "INVALID_ORDER_BOOK_DEPTH"),
    ('{"type": "SUBSCRIBE", "channels": [{"name": "CANDLESTICKS", "properties": [{'
     '"instrument_code": "BTC_EUR", "time_granularity": {"unit": "MINUTES", "period": 7}}]}]}',
     "INVALID_CANDLESTICKS_GRANULARITY"),
    ('{"type": "UNSUBSCRIBE", "channels": ["NOPE"]}', "INVALID_SUBSCRIPTION"),
])
async def test_bad_messages_get_the_exchange_error_and_the_session_stays_open(
    sandbox: RunningApp, http: aiohttp.ClientSession, sent: str, code: str
) -> None:
    async with http.ws_connect(ws_url(sandbox)) as ws:
        await ws.send_str(sent)
        await expect_error(ws, code)
        answer = await subscribe(ws, PRICE_TICKS)  # still usable
        assert [c["name"] for c in answer["channels"]] == ["PRICE_TICKS"]


async def test_a_message_over_a_mebibyte_ends_the_session(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox), max_msg_size=0) as ws:
        await ws.send_str(json.dumps({"type": "SUBSCRIBE", "pad": "x" * (1 << 20)}))
        closing = await ws.receive(timeout=3)
        assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1009)
    (session,) = await recorded(http, sandbox)
    assert session["received"] == []  # never handled


async def test_binary_frames_are_refused(sandbox: RunningApp, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(ws_url(sandbox)) as ws:
        await ws.send_bytes(b'{"type": "SUBSCRIBE"}')
        await expect_error(ws, "MALFORMED_JSON")


# ---- identity: what the gateway's headers give a session --------------------------------------


async def test_authenticate_sent_to_the_sandbox_is_refused(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox)) as ws:
        await ws.send_json({"type": "AUTHENTICATE", "api_token": "eyJhbGciOi.fake.token"})
        error = await expect_error(ws, "INVALID_APIKEY")
        assert "gateway" in error["message"]
        # It authenticated nothing: private channels stay closed.
        await ws.send_json({"type": "SUBSCRIBE", "channels": [{"name": "ACCOUNT_HISTORY"}]})
        await expect_error(ws, "MISSING_CREDENTIALS")


@pytest.mark.parametrize("name", ["ACCOUNT_HISTORY", "TRADING", "ORDERS"])
async def test_private_channels_need_an_account(
    sandbox: RunningApp, http: aiohttp.ClientSession, name: str
) -> None:
    async with http.ws_connect(ws_url(sandbox)) as ws:
        await ws.send_json({"type": "SUBSCRIBE", "channels": [{"name": name}]})
        error = await expect_error(ws, "MISSING_CREDENTIALS")
        assert name in error["message"]


async def test_a_refused_subscribe_subscribes_nothing(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox)) as ws:
        await ws.send_json({"type": "SUBSCRIBE",
                            "channels": [PRICE_TICKS, {"name": "ACCOUNT_HISTORY"}]})
        await expect_error(ws, "MISSING_CREDENTIALS")
        assert await collect(ws, 5 * TICK) == []  # not even the public half


@pytest.mark.parametrize(("permissions", "name", "missing"), [
    ("read", "ORDERS", "trade"),
    ("trade", "ACCOUNT_HISTORY", "read"),
    ("", "TRADING", "read"),
])
async def test_the_permissions_header_limits_private_channels(
    sandbox: RunningApp, http: aiohttp.ClientSession, permissions: str, name: str, missing: str
) -> None:
    headers = {**ALICE, "X-Gateway-Permissions": permissions}
    async with http.ws_connect(ws_url(sandbox), headers=headers) as ws:
        await ws.send_json({"type": "SUBSCRIBE", "channels": [{"name": name}]})
        error = await expect_error(ws, "MISSING_PERMISSION")
        assert f"'{missing}'" in error["message"]


async def test_account_history_opens_with_the_account_s_balances_and_orders(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    placed = await rest(http, sandbox, "POST", "/account/orders", 201, headers=ALICE,
                        json=limit_buy())
    headers = {**ALICE, "X-Gateway-Permissions": "read,trade"}
    async with http.ws_connect(ws_url(sandbox), headers=headers) as ws:
        answer = await subscribe(ws, {"name": "ACCOUNT_HISTORY"})
        assert answer["channels"] == [{"name": "ACCOUNT_HISTORY"}]
        snapshot = await receive_json(ws)
        assert (snapshot["type"], snapshot["channel_name"]) == ("BALANCES_SNAPSHOT",
                                                                "ACCOUNT_HISTORY")
        assert snapshot["account_id"] == "alice"
        held = {b["currency_code"]: (b["available"], b["locked"]) for b in snapshot["balances"]}
        assert held == {"EUR": ("5000.0", "5000.0"), "BTC": ("1.0", "0.0")}
        assert {b["account_id"] for b in snapshot["balances"]} == {"alice"}
        active = await receive_json(ws)
        assert active["type"] == "ACTIVE_ORDERS_SNAPSHOT"
        assert [o["order"]["order_id"] for o in active["orders"]] == [placed["order_id"]]
        inactive = await receive_json(ws)
        assert (inactive["type"], inactive["orders"]) == ("INACTIVE_ORDERS_SNAPSHOT", [])


async def test_a_new_account_s_snapshot_shows_its_seed_money(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox), headers={"X-Gateway-Account-Id": "new"}) as ws:
        await subscribe(ws, {"name": "ACCOUNT_HISTORY"})
        snapshot = await receive_json(ws)
        assert {b["currency_code"]: b["available"] for b in snapshot["balances"]} == {
            "EUR": "10000.0", "BTC": "1.0"}
        # Seeding happened before the snapshot, so it is not replayed as updates.
        assert [m["type"] for m in await collect(ws, 4 * TICK)] == [
            "ACTIVE_ORDERS_SNAPSHOT", "INACTIVE_ORDERS_SNAPSHOT"]


# ---- account updates --------------------------------------------------------------------------


async def test_rest_trading_shows_on_account_history_and_trading(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox), headers=ALICE) as ws:
        await subscribe(ws, {"name": "ACCOUNT_HISTORY"}, {"name": "TRADING"})
        await next_message(ws, "INACTIVE_ORDERS_SNAPSHOT")

        market = {"instrument_code": "BTC_EUR", "type": "MARKET", "side": "BUY", "amount": "0.01"}
        order = await rest(http, sandbox, "POST", "/account/orders", 201, headers=ALICE,
                           json=market)
        held = await balances(http, sandbox)
        seen = await collect(ws, 4 * TICK)
        updates = [m["update"] for m in seen if m["type"] == "ACCOUNT_UPDATE"]
        assert [u["type"] for u in updates] == ["ORDER_CREATED", "TRADE_SETTLED"]
        settled = updates[1]
        assert settled["order_id"] == order["order_id"]
        assert settled["trade"]["price"] == "60000.0"
        assert (settled["spent"]["currency_code"], settled["spent"]["amount"]) == ("EUR", "600.0")
        for moved in (settled["spent"], settled["credited"]):
            available, locked = held[moved["currency_code"]]
            assert (Decimal(moved["new_available"]), Decimal(moved["new_locked"])) == (
                available, locked)  # the update agrees with REST
        trading = [m for m in seen if m["channel_name"] == "TRADING"]
        assert [(m["type"], m.get("status")) for m in trading] == [
            ("FILL", None), ("DONE", "FILLED_FULLY")]
        assert trading[0]["matched_amount"] == "0.01"

        resting = await rest(http, sandbox, "POST", "/account/orders", 201, headers=ALICE,
                             json=limit_buy())
        await rest(http, sandbox, "DELETE", f"/account/orders/{resting['order_id']}", 204,
                   headers=ALICE)
        seen = await collect(ws, 4 * TICK)
        updates = [m["update"] for m in seen if m["type"] == "ACCOUNT_UPDATE"]
        assert [u["type"] for u in updates] == ["ORDER_CREATED", "ORDER_CLOSED"]
        assert updates[0]["locked"]["amount"] == updates[1]["unlocked"]["amount"] == "5000.0"
        assert [(m["type"], m.get("status")) for m in seen if m["channel_name"] == "TRADING"] == [
            ("BOOKED", None), ("DONE", "CANCELLED")]


async def test_withdrawals_show_on_account_history(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox), headers=ALICE) as ws:
        await subscribe(ws, {"name": "ACCOUNT_HISTORY"})
        await next_message(ws, "INACTIVE_ORDERS_SNAPSHOT")
        body = {"currency": "BTC", "amount": "0.1", "recipient": {"address": "bc1qexample"}}
        sent = await rest(http, sandbox, "POST", "/account/withdraw/crypto", 201, headers=ALICE,
                          json=body)
        update = (await next_message(ws, "ACCOUNT_UPDATE"))["update"]
        assert (update["type"], update["activity"]) == ("FUNDS_WITHDRAWN", "FUNDING")
        assert update["deducted"] == {"currency_code": "BTC", "amount": "0.1001",
                                      "new_available": "0.8999", "new_locked": "0.0"}
        assert update["transaction"]["transaction_id"] == sent["transaction_id"]


async def test_one_account_never_sees_another_s_updates(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox), headers=BOB) as ws:
        await subscribe(ws, {"name": "ACCOUNT_HISTORY"}, {"name": "TRADING"})
        await next_message(ws, "INACTIVE_ORDERS_SNAPSHOT")
        await rest(http, sandbox, "POST", "/account/orders", 201, headers=ALICE, json=limit_buy())
        assert await collect(ws, 4 * TICK) == []


# ---- the ORDERS channel -------------------------------------------------------------------------


async def test_orders_channel_create_and_cancel_show_over_rest(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox), headers=ALICE) as ws:
        await subscribe(ws, {"name": "ORDERS"})
        client_id = str(uuid.uuid4())
        await ws.send_json({"type": "CREATE_ORDER", "order": limit_buy(client_id=client_id)})
        created = await next_message(ws, "ORDER_CREATED")
        assert created["channel_name"] == "ORDERS"
        order_id = created["order"]["order_id"]
        assert (created["order"]["client_id"], created["order"]["status"]) == (client_id, "OPEN")
        seen = await rest(http, sandbox, "GET", f"/account/orders/{order_id}", 200, headers=ALICE)
        assert seen["order"] == created["order"]  # the same order REST would have placed
        assert (await balances(http, sandbox))["EUR"] == (Decimal("5000"), Decimal("5000"))

        await ws.send_json({"type": "CANCEL_ORDER", "order_id": order_id})
        cancelled = await next_message(ws, "ORDER_SUBMITTED_FOR_CANCELLATION")
        assert (cancelled["order_id"], cancelled["channel_name"]) == (order_id, "ORDERS")
        seen = await rest(http, sandbox, "GET", f"/account/orders/{order_id}", 200, headers=ALICE)
        assert seen["order"]["status"] == "CLOSED"
        assert (await balances(http, sandbox))["EUR"] == (Decimal("10000"), Decimal("0"))

        # By client id, as REST's DELETE /account/orders/client/{client_id}.
        other = str(uuid.uuid4())
        await ws.send_json({"type": "CREATE_ORDER", "order": limit_buy(client_id=other)})
        await next_message(ws, "ORDER_CREATED")
        await ws.send_json({"type": "CANCEL_ORDER", "client_id": other})
        cancelled = await next_message(ws, "ORDER_SUBMITTED_FOR_CANCELLATION")
        assert cancelled["client_id"] == other
        listed = await rest(http, sandbox, "GET", "/account/orders", 200, headers=ALICE)
        assert listed["order_history"] == []  # nothing left open


async def test_orders_channel_market_order_fills_like_rest(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox), headers=ALICE) as ws:
        await subscribe(ws, {"name": "ORDERS"})
        market = {"instrument_code": "BTC_EUR", "type": "MARKET", "side": "SELL", "amount": "0.5"}
        await ws.send_json({"type": "CREATE_ORDER", "order": market})
        await next_message(ws, "ORDER_CREATED")
        held = await balances(http, sandbox)
        assert held["BTC"] == (Decimal("0.5"), Decimal("0"))
        assert held["EUR"][0] == Decimal("10000") + Decimal("30000") * (1 - Decimal("0.0015"))


@pytest.mark.parametrize(("order", "code"), [
    ({}, "MISSING_INSTRUMENT_CODE"),
    ({"instrument_code": "BTC_EUR", "type": "LIMIT", "side": "BUY", "amount": "1"},
     "MISSING_PRICE"),
    ({"instrument_code": "BTC_EUR", "type": "MARKET", "side": "BUY", "amount": "1"},
     "INSUFFICIENT_FUNDS"),
    ("not an object", "INVALID_QUERY"),
])
async def test_orders_channel_refusals_place_nothing(
    sandbox: RunningApp, http: aiohttp.ClientSession, order: object, code: str
) -> None:
    async with http.ws_connect(ws_url(sandbox), headers=ALICE) as ws:
        await subscribe(ws, {"name": "ORDERS"})
        await ws.send_json({"type": "CREATE_ORDER", "order": order})
        failed = await next_message(ws, "ORDER_CREATION_FAILED")
        assert (failed["error"], failed["channel_name"]) == (code, "ORDERS")
    listed = await rest(http, sandbox, "GET", "/account/orders", 200, headers=ALICE,
                        params={"with_cancelled_and_rejected": "true"})
    assert listed["order_history"] == []
    assert (await balances(http, sandbox))["EUR"] == (Decimal("10000"), Decimal("0"))


@pytest.mark.parametrize(("cancel", "code"), [
    ({"order_id": str(uuid.uuid4())}, "ORDER_NOT_FOUND"),
    ({"order_id": "not-a-uuid"}, "INVALID_ORDER_ID"),
    ({"order_id": 7}, "INVALID_ORDER_ID"),
    ({"client_id": "nope"}, "INVALID_CLIENT_UUID"),
    ({}, "INVALID_ORDER_ID"),
])
async def test_orders_channel_cancel_failures(
    sandbox: RunningApp, http: aiohttp.ClientSession, cancel: dict[str, object], code: str
) -> None:
    async with http.ws_connect(ws_url(sandbox), headers=ALICE) as ws:
        await subscribe(ws, {"name": "ORDERS"})
        await ws.send_json({"type": "CANCEL_ORDER", **cancel})
        failed = await next_message(ws, "ORDER_CANCELLATION_FAILED")
        assert failed["error"] == code


async def test_orders_need_the_orders_channel(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox)) as ws:
        await ws.send_json({"type": "CREATE_ORDER", "order": limit_buy()})
        await expect_error(ws, "MISSING_CREDENTIALS")
    read_only = {**ALICE, "X-Gateway-Permissions": "read"}
    async with http.ws_connect(ws_url(sandbox), headers=read_only) as ws:
        await ws.send_json({"type": "CANCEL_ORDER", "order_id": str(uuid.uuid4())})
        await expect_error(ws, "MISSING_PERMISSION")
    async with http.ws_connect(ws_url(sandbox), headers=ALICE) as ws:
        await ws.send_json({"type": "CREATE_ORDER", "order": limit_buy()})
        error = await expect_error(ws, "INVALID_SUBSCRIPTION")
        assert "ORDERS" in error["message"]
    listed = await rest(http, sandbox, "GET", "/account/orders", 200, headers=ALICE)
    assert listed["order_history"] == []


# ---- heartbeats, drops, shutdown ---------------------------------------------------------------


async def test_heartbeats_at_the_configured_interval(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox)) as ws:
        beats = [m for m in await collect(ws, 4 * HEARTBEAT + 0.1, ignore=frozenset())
                 if m["type"] == "HEARTBEAT"]
        assert 3 <= len(beats) <= 5, beats
        assert set(beats[0]) == {"subscription", "channel_name", "type", "time"}
        assert (beats[0]["subscription"], beats[0]["channel_name"]) == ("SYSTEM", "SYSTEM")


async def test_drop_aborts_every_session_mid_stream(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox)) as first, \
            http.ws_connect(ws_url(sandbox), headers=ALICE) as second:
        for ws in (first, second):
            await subscribe(ws, PRICE_TICKS)
            await next_message(ws, "PRICE_TICK")
        async with http.post(sandbox.url + "/__sandbox/streams/drop") as response:
            assert await response.json() == {"dropped": 2}
        for ws in (first, second):
            while (message := await ws.receive(timeout=3)).type is aiohttp.WSMsgType.TEXT:
                assert json.loads(message.data)["type"] != "CONNECTION_CLOSING"
            # The TCP connection ended with no close frame: an upstream that vanished.
            assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            assert ws.close_code == 1006


async def test_drop_can_close_one_account_s_sessions_with_a_code(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox)) as anonymous, \
            http.ws_connect(ws_url(sandbox), headers=ALICE) as alice:
        url = sandbox.url + "/__sandbox/streams/drop"
        params = {"how": "close", "code": "1011", "account_id": "alice"}
        async with http.post(url, params=params) as response:
            assert await response.json() == {"dropped": 1}
        await next_message(alice, "CONNECTION_CLOSING")
        closing = await alice.receive(timeout=3)
        assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1011)
        answer = await subscribe(anonymous, PRICE_TICKS)  # the other session is untouched
        assert answer["channels"] == [PRICE_TICKS]


@pytest.mark.parametrize("query", ["how=explode", "how=close&code=1006", "code=x"])
async def test_drop_refuses_bad_parameters(
    sandbox: RunningApp, http: aiohttp.ClientSession, query: str
) -> None:
    async with http.post(sandbox.url + "/__sandbox/streams/drop?" + query) as response:
        assert (response.status, await response.json()) == (400, {"error": "INVALID_QUERY"})


async def test_shutdown_announces_itself_and_closes_going_away(
    http: aiohttp.ClientSession
) -> None:
    running = await start_app(build_sandbox_app(stream_tick=TICK, stream_heartbeat=HEARTBEAT))
    async with http.ws_connect(ws_url(running)) as ws:
        await subscribe(ws, PRICE_TICKS)
        stopping = asyncio.create_task(running.stop())
        await next_message(ws, "CONNECTION_CLOSING")
        closing = await ws.receive(timeout=3)
        assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1001)
        await asyncio.wait_for(stopping, timeout=5)


async def test_a_client_too_slow_to_read_is_disconnected(
    sandbox: RunningApp, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "QUEUE_LIMIT", 5)
    every = [{"instrument_code": code, "time_granularity": {"unit": "MINUTES", "period": period}}
             for code in ("BTC_EUR", "ETH_EUR") for period in (1, 5, 15, 30)]
    async with http.ws_connect(ws_url(sandbox)) as ws:
        # One tick queues 8 candles at once: more than the (shrunk) queue holds.
        await ws.send_json({"type": "SUBSCRIBE",
                            "channels": [{"name": "CANDLESTICKS", "properties": every}]})
        while (message := await ws.receive(timeout=3)).type is aiohttp.WSMsgType.TEXT:
            pass
        assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1008)


# ---- recording: what reached the sandbox ---------------------------------------------------------


async def recorded(http: aiohttp.ClientSession, sandbox: RunningApp) -> list[dict[str, Any]]:
    async with http.get(sandbox.url + "/__sandbox/streams") as response:
        assert response.status == 200
        sessions: list[dict[str, Any]] = (await response.json())["sessions"]
        return sessions


async def test_recording_keeps_the_upgrade_and_every_message_received(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    headers = {**ALICE, "X-Gateway-Key-Id": "abcdefghijklmnop",
               "X-Gateway-Permissions": "read"}
    sent = ['{"type": "AUTHENTICATE", "api_token": "tok-secret"}',
            json.dumps({"type": "SUBSCRIBE", "channels": [{"name": "ORDERS"}]})]
    async with http.ws_connect(ws_url(sandbox), headers=headers) as ws:
        for text in sent:
            await ws.send_str(text)
        await ws.send_bytes(b"\x00\x01")
        await expect_error(ws, "INVALID_APIKEY")
        await expect_error(ws, "MISSING_PERMISSION")  # refused, yet recorded as received
        await expect_error(ws, "MALFORMED_JSON")
        (session,) = await recorded(http, sandbox)
        assert session["closed_at"] is None
        assert session["request"]["path"] == "/streams"
        assert session["request"]["headers"]["x-gateway-account-id"] == "alice"
        assert session["request"]["headers"]["x-gateway-key-id"] == "abcdefghijklmnop"
        assert ["X-Gateway-Permissions", "read"] in session["request"]["header_list"]
        received = session["received"]
        assert [r.get("text") for r in received[:2]] == sent  # byte for byte, in order
        assert (received[2]["binary_length"], len(received[2]["binary_sha256"])) == (2, 64)
    await asyncio.sleep(0.2)
    (session,) = await recorded(http, sandbox)
    assert (session["close_code"], session["closed_at"] is not None) == (1000, True)


async def test_reset_forgets_stream_records_but_keeps_sessions_open(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(ws_url(sandbox)) as ws:
        async with http.ws_connect(ws_url(sandbox)):
            pass
        await subscribe(ws, PRICE_TICKS)
        assert len(await recorded(http, sandbox)) == 2
        async with http.post(sandbox.url + "/__sandbox/reset") as response:
            assert response.status == 204
        (session,) = await recorded(http, sandbox)  # the closed one is forgotten
        assert session["received"] == []
        await ws.send_json({"type": "UNSUBSCRIBE", "channels": ["PRICE_TICKS"]})
        await next_message(ws, "UNSUBSCRIBED")
        (session,) = await recorded(http, sandbox)
        assert [json.loads(r["text"])["type"] for r in session["received"]] == ["UNSUBSCRIBE"]


async def test_a_plain_get_on_the_stream_path_is_refused(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    async with http.get(sandbox.url + "/streams") as response:
        assert response.status == 400
        assert (await response.json())["error"] == "BAD_REQUEST"
