"""The sandbox exchange: real endpoint shapes, account state, and the test-only probes."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from sandbox import build_sandbox_app

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]

API = "/public/v1"
ALICE = {"X-Gateway-Account-Id": "alice"}
BOB = {"X-Gateway-Account-Id": "bob"}
ROUTES_FILE = Path(__file__).resolve().parents[3] / "config" / "routes.yaml"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> Client:
    return await aiohttp_client(build_sandbox_app())


async def _json(client: Client, method: str, path: str, status: int, **kwargs: Any) -> Any:
    response = await client.request(method, API + path, **kwargs)
    assert response.status == status, await response.text()
    return await response.json()


def _balances(body: dict[str, Any]) -> dict[str, Decimal]:
    return {b["currency_code"]: Decimal(b["available"]) for b in body["balances"]}


def _limit_buy(**extra: object) -> dict[str, object]:
    return {
        "instrument_code": "BTC_EUR",
        "type": "LIMIT",
        "side": "BUY",
        "amount": "0.1",
        "price": "50000",
        **extra,
    }


# ---- public market data ----------------------------------------------------------------


async def test_time(client: Client) -> None:
    body = await _json(client, "GET", "/time", 200)
    assert ISO_MS.match(body["iso"])
    assert isinstance(body["epoch_millis"], int)


async def test_currencies_and_instruments(client: Client) -> None:
    currencies = await _json(client, "GET", "/currencies", 200)
    assert {"code": "BTC", "precision": 8} | {"name": "Bitcoin"} in currencies
    instruments = await _json(client, "GET", "/instruments", 200)
    btc_eur = next(i for i in instruments if i["id"] == "BTC_EUR")
    assert btc_eur["base"] == {"code": "BTC", "precision": 8}
    assert btc_eur["quote"] == {"code": "EUR", "precision": 2}
    assert btc_eur["state"] == "ACTIVE"
    assert {"amount_precision", "market_precision", "min_size"} <= btc_eur.keys()


async def test_market_ticker(client: Client) -> None:
    ticker = await _json(client, "GET", "/market-ticker/BTC_EUR", 200)
    assert ticker["instrument_code"] == "BTC_EUR"
    assert Decimal(ticker["best_bid"]) < Decimal(ticker["last_price"]) < Decimal(ticker["best_ask"])
    for field in ("sequence", "time", "state", "base_volume", "quote_volume", "high", "low"):
        assert field in ticker
    tickers = await _json(client, "GET", "/market-ticker", 200)
    assert "BTC_EUR" in {t["instrument_code"] for t in tickers}


async def test_order_book_levels(client: Client) -> None:
    book = await _json(client, "GET", "/order-book/BTC_EUR", 200, params={"depth": "5"})
    assert len(book["bids"]) == len(book["asks"]) == 5
    assert {"price", "amount", "order_id"} == book["asks"][0].keys()
    level2 = await _json(client, "GET", "/order-book/BTC_EUR", 200, params={"level": "2"})
    assert "number_of_orders" in level2["bids"][0]
    assert Decimal(level2["bids"][0]["price"]) > Decimal(level2["bids"][1]["price"])
    level1 = await _json(client, "GET", "/order-book/BTC_EUR", 200, params={"level": "1"})
    assert len(level1["asks"]) == 1
    bad = await _json(client, "GET", "/order-book/BTC_EUR", 400, params={"level": "9"})
    assert bad == {"error": "INVALID_ORDER_BOOK_LEVEL"}


async def test_candlesticks(client: Client) -> None:
    params = {
        "unit": "HOURS",
        "period": "1",
        "from": "2024-01-01T00:00:00.000Z",
        "to": "2024-01-01T05:00:00.000Z",
    }
    candles = await _json(client, "GET", "/candlesticks/BTC_EUR", 200, params=params)
    assert len(candles) == 5
    assert candles[0]["granularity"] == {"unit": "HOURS", "period": 1}
    assert candles[0]["time"] == "2024-01-01T00:59:59.999Z"
    candle = candles[0]
    assert Decimal(candle["low"]) <= Decimal(candle["open"]) <= Decimal(candle["high"])
    missing = await _json(client, "GET", "/candlesticks/BTC_EUR", 400, params={"unit": "HOURS"})
    assert missing == {"error": "MISSING_CANDLESTICKS_PERIOD_PARAM"}


async def test_price_ticks_and_fee_groups(client: Client) -> None:
    ticks = await _json(client, "GET", "/price-ticks/ETH_EUR", 200)
    assert ticks and ticks[0]["taker_side"] in ("BUY", "SELL")
    assert ticks[0]["trade_timestamp"] > ticks[-1]["trade_timestamp"]  # latest first
    groups = await _json(client, "GET", "/fees", 200)
    assert groups[0]["fee_tiers"][0]["maker_fee"] == "0.1"


async def test_unknown_instrument(client: Client) -> None:
    body = await _json(client, "GET", "/market-ticker/DOGE_EUR", 400)
    assert body == {"error": "INVALID_INSTRUMENT_CODE"}


async def test_unknown_path_and_method_answer_json(client: Client) -> None:
    assert await _json(client, "GET", "/nope", 404) == {"error": "NOT_FOUND"}
    response = await client.delete(API + "/time")
    assert response.status == 405
    assert await response.json() == {"error": "METHOD_NOT_ALLOWED"}


# ---- accounts ----------------------------------------------------------------------------


async def test_account_endpoints_need_the_account_header(client: Client) -> None:
    body = await _json(client, "GET", "/account/balances", 401)
    assert body == {"error": "MISSING_CREDENTIALS"}
    await _json(client, "POST", "/account/orders", 401, json=_limit_buy())


async def test_new_account_is_seeded(client: Client) -> None:
    body = await _json(client, "GET", "/account/balances", 200, headers=ALICE)
    assert body["account_id"] == "alice"
    eur = next(b for b in body["balances"] if b["currency_code"] == "EUR")
    keys = {"account_id", "currency_code", "change", "available", "locked", "sequence", "time"}
    assert set(eur) == keys
    assert _balances(body) == {"EUR": Decimal(10000), "BTC": Decimal(1)}
    deposits = await _json(client, "GET", "/account/deposits", 200, headers=ALICE)
    assert {d["currency"] for d in deposits["deposit_history"]} == {"EUR", "BTC"}


async def test_limit_order_create_get_cancel(client: Client) -> None:
    client_id = str(uuid.uuid4())
    created = await _json(
        client, "POST", "/account/orders", 201, headers=ALICE, json=_limit_buy(client_id=client_id)
    )
    order_id = created["order_id"]
    assert uuid.UUID(order_id)
    assert created["status"] == "OPEN"
    assert created["client_id"] == client_id
    assert created["time_in_force"] == "GOOD_TILL_CANCELLED"
    assert (created["price"], created["amount"], created["filled_amount"]) == (
        "50000.0",
        "0.1",
        "0.0",
    )

    balances = await _json(client, "GET", "/account/balances", 200, headers=ALICE)
    eur = next(b for b in balances["balances"] if b["currency_code"] == "EUR")
    assert (Decimal(eur["available"]), Decimal(eur["locked"])) == (Decimal(5000), Decimal(5000))

    fetched = await _json(client, "GET", f"/account/orders/{order_id}", 200, headers=ALICE)
    assert fetched["order"]["order_id"] == order_id
    assert fetched["trades"] == []
    by_client = await _json(
        client, "GET", f"/account/orders/client/{client_id}", 200, headers=ALICE
    )
    assert by_client["order"]["order_id"] == order_id
    listed = await _json(client, "GET", "/account/orders", 200, headers=ALICE)
    assert [o["order"]["order_id"] for o in listed["order_history"]] == [order_id]

    response = await client.delete(f"{API}/account/orders/{order_id}", headers=ALICE)
    assert response.status == 204
    fetched = await _json(client, "GET", f"/account/orders/{order_id}", 200, headers=ALICE)
    assert fetched["order"]["status"] == "CLOSED"
    balances = await _json(client, "GET", "/account/balances", 200, headers=ALICE)
    assert _balances(balances)["EUR"] == 10000
    again = await _json(client, "DELETE", f"/account/orders/{order_id}", 404, headers=ALICE)
    assert again == {"error": "ORDER_NOT_FOUND"}
    open_orders = await _json(client, "GET", "/account/orders", 200, headers=ALICE)
    assert open_orders["order_history"] == []
    closed = await _json(
        client,
        "GET",
        "/account/orders",
        200,
        headers=ALICE,
        params={"with_cancelled_and_rejected": "true"},
    )
    assert len(closed["order_history"]) == 1


async def test_market_order_fills_and_moves_balances(client: Client) -> None:
    body = {"instrument_code": "BTC_EUR", "type": "MARKET", "side": "BUY", "amount": "0.1"}
    created = await _json(client, "POST", "/account/orders", 201, headers=ALICE, json=body)
    assert created["status"] == "FILLED_FULLY"
    assert created["filled_amount"] == "0.1"
    ticker = await _json(client, "GET", "/market-ticker/BTC_EUR", 200)
    price = Decimal(ticker["last_price"])

    balances = _balances(await _json(client, "GET", "/account/balances", 200, headers=ALICE))
    fee = Decimal("0.1") * Decimal("0.0015")  # taker fee, paid in what was bought
    assert balances["EUR"] == 10000 - price * Decimal("0.1")
    assert balances["BTC"] == 1 + Decimal("0.1") - fee

    order_id = created["order_id"]
    trades = await _json(client, "GET", f"/account/orders/{order_id}/trades", 200, headers=ALICE)
    [entry] = trades["trade_history"]
    assert entry["trade"]["order_id"] == order_id
    assert Decimal(entry["trade"]["price"]) == price
    assert entry["fee"]["fee_currency"] == "BTC"
    assert Decimal(entry["fee"]["fee_amount"]) == fee
    trade_id = entry["trade"]["trade_id"]
    single = await _json(client, "GET", f"/account/trades/{trade_id}", 200, headers=ALICE)
    assert single == entry
    all_trades = await _json(client, "GET", "/account/trades", 200, headers=ALICE)
    assert all_trades["trade_history"] == [entry]
    volume = await _json(client, "GET", "/account/trading-volume", 200, headers=ALICE)
    assert Decimal(volume["volume"]) == Decimal("0.1")


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"instrument_code": None}, 400, "MISSING_INSTRUMENT_CODE"),
        ({"instrument_code": "XXX_EUR"}, 400, "INVALID_INSTRUMENT_CODE"),
        ({"type": "ICEBERG"}, 400, "INVALID_ORDER_TYPE"),
        ({"side": "HOLD"}, 400, "INVALID_SIDE"),
        ({"amount": "lots"}, 400, "INVALID_AMOUNT"),
        ({"amount": "-1"}, 400, "NEGATIVE_AMOUNT"),
        ({"amount": "0.123456"}, 400, "BAD_AMOUNT_PRECISION"),
        ({"price": None}, 400, "MISSING_PRICE"),
        ({"client_id": "not-a-uuid"}, 400, "INVALID_CLIENT_UUID"),
        ({"amount": "0.0001"}, 422, "MIN_SIZE_NOT_SATISFIED"),
        ({"amount": "10"}, 422, "INSUFFICIENT_FUNDS"),
    ],
)
async def test_order_validation(
    client: Client, changes: dict[str, object], status: int, code: str
) -> None:
    order = {k: v for k, v in (_limit_buy() | changes).items() if v is not None}
    body = await _json(client, "POST", "/account/orders", status, headers=ALICE, json=order)
    assert body == {"error": code}


async def test_unknown_order(client: Client) -> None:
    missing = f"/account/orders/{uuid.uuid4()}"
    assert await _json(client, "GET", missing, 404, headers=ALICE) == {"error": "ORDER_NOT_FOUND"}
    invalid = await _json(client, "GET", "/account/orders/123", 400, headers=ALICE)
    assert invalid == {"error": "INVALID_ORDER_ID"}


async def test_accounts_are_isolated(client: Client) -> None:
    created = await _json(client, "POST", "/account/orders", 201, headers=ALICE, json=_limit_buy())
    path = f"/account/orders/{created['order_id']}"
    assert await _json(client, "GET", path, 404, headers=BOB) == {"error": "ORDER_NOT_FOUND"}
    bob = await _json(client, "GET", "/account/balances", 200, headers=BOB)
    assert _balances(bob)["EUR"] == 10000


async def test_cancel_all_by_instrument(client: Client) -> None:
    btc = await _json(client, "POST", "/account/orders", 201, headers=ALICE, json=_limit_buy())
    eth_order = _limit_buy(instrument_code="ETH_EUR", price="2000", amount="1")
    await _json(client, "POST", "/account/orders", 201, headers=ALICE, json=eth_order)
    params = {"instrument_code": "BTC_EUR"}
    cancelled = await _json(client, "DELETE", "/account/orders", 200, headers=ALICE, params=params)
    assert cancelled == [btc["order_id"]]
    left = await _json(client, "GET", "/account/orders", 200, headers=ALICE)
    assert [o["order"]["instrument_code"] for o in left["order_history"]] == ["ETH_EUR"]


async def test_deposits_and_withdrawals(client: Client) -> None:
    address = await _json(client, "GET", "/account/deposit/crypto/BTC", 200, headers=ALICE)
    assert address["address"] and address["enabled"] is True
    await _json(client, "GET", "/account/deposit/crypto/ETH", 404, headers=ALICE)
    created = await _json(
        client, "POST", "/account/deposit/crypto", 201, headers=ALICE, json={"currency": "ETH"}
    )
    assert created["address"].startswith("0x")
    fiat = await _json(client, "GET", "/account/deposit/fiat/EUR", 200, headers=ALICE)
    assert {"iban", "bic", "unique_id"} <= fiat.keys()

    payout = {"currency": "BTC", "amount": "0.5", "recipient": {"address": "bc1qexample"}}
    sent = await _json(client, "POST", "/account/withdraw/crypto", 201, headers=ALICE, json=payout)
    assert (sent["amount"], sent["recipient"]) == ("0.5", "bc1qexample")
    balances = _balances(await _json(client, "GET", "/account/balances", 200, headers=ALICE))
    assert balances["BTC"] == Decimal("0.5") - Decimal(sent["fee"])
    history = await _json(client, "GET", "/account/withdrawals", 200, headers=ALICE)
    assert history["withdrawal_history"][0]["transaction_id"] == sent["transaction_id"]

    too_much = {"currency": "EUR", "amount": "20000", "payout_account_id": str(uuid.uuid4())}
    body = await _json(client, "POST", "/account/withdraw/fiat", 422, headers=ALICE, json=too_much)
    assert body == {"error": "INSUFFICIENT_FUNDS"}


# ---- test-only probes ------------------------------------------------------------------------


async def test_last_request_records_what_arrived(client: Client) -> None:
    body = b'{"instrument_code": "BTC_EUR"}'
    headers = {**ALICE, "X-Request-Id": "req-1", "Content-Type": "application/json"}
    await client.post(API + "/account/orders?x=1&y=a%20b", data=body, headers=headers)
    record = await (await client.get("/__sandbox/last-request")).json()
    assert record["method"] == "POST"
    assert record["path"] == API + "/account/orders"
    assert record["raw_path"] == API + "/account/orders?x=1&y=a%20b"
    assert record["query_string"] == "x=1&y=a%20b"
    assert record["headers"]["x-request-id"] == "req-1"
    assert record["headers"]["x-gateway-account-id"] == "alice"
    assert ["X-Request-Id", "req-1"] in record["header_list"]
    assert record["body_length"] == len(body)
    assert record["body_sha256"] == hashlib.sha256(body).hexdigest()
    # Probe paths are never recorded.
    again = await (await client.get("/__sandbox/last-request")).json()
    assert again == record


async def test_last_request_keeps_repeated_headers(client: Client) -> None:
    headers = [("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "10.0.0.2")]
    await client.get(API + "/time", headers=headers)
    record = await (await client.get("/__sandbox/last-request")).json()
    assert record["headers"]["x-forwarded-for"] == "10.0.0.1, 10.0.0.2"
    assert record["body_length"] == 0


async def test_echo_streams_without_buffering(client: Client) -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB
    first_echoed = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield chunk
        # The rest is only sent once the first chunk has come back: a buffering echo deadlocks.
        await asyncio.wait_for(first_echoed.wait(), timeout=5)
        for _ in range(63):
            yield chunk

    response = await client.post("/__sandbox/echo", data=body())
    assert response.status == 200
    received = bytearray()
    async for part in response.content.iter_any():
        received += part
        first_echoed.set()
    assert received == chunk * 64


async def test_echo_answers_put(client: Client) -> None:
    response = await client.put("/__sandbox/echo", data=b"hello")
    assert await response.read() == b"hello"


async def test_big_streams_the_requested_size(client: Client) -> None:
    response = await client.get("/__sandbox/big", params={"size": str(3 * 65536 + 5)})
    assert response.headers["Content-Length"] == str(3 * 65536 + 5)
    assert await response.read() == b"x" * (3 * 65536 + 5)


async def test_slow_waits(client: Client) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await client.get("/__sandbox/slow", params={"delay": "0.2"})
    assert response.status == 200
    assert loop.time() - started >= 0.2


async def test_status_probe(client: Client) -> None:
    limited = await client.get("/__sandbox/status/429")
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "7"
    assert await limited.json() == {"error": "RATELIMIT"}
    failed = await client.post("/__sandbox/status/503")
    assert (failed.status, await failed.json()) == (503, {"error": "SERVICE_UNAVAILABLE"})


async def test_reset_forgets_accounts(client: Client) -> None:
    await _json(client, "POST", "/account/orders", 201, headers=ALICE, json=_limit_buy())
    assert (await client.post("/__sandbox/reset")).status == 204
    listed = await _json(client, "GET", "/account/orders", 200, headers=ALICE)
    assert listed["order_history"] == []


# ---- the route table ---------------------------------------------------------------------


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_routes_yaml_covers_exactly_the_sandbox_api() -> None:
    routes = yaml.safe_load(ROUTES_FILE.read_text())["routes"]
    declared = {(m, _shape(r["path"])) for r in routes for m in r["methods"]}
    served = {
        (route.method, _shape(route.resource.canonical))
        for route in build_sandbox_app().router.routes()
        if route.resource is not None and route.resource.canonical.startswith(API)
    }
    assert declared == served
    assert len(declared) == sum(len(r["methods"]) for r in routes)  # no duplicates


def test_routes_yaml_permissions_follow_the_exchange() -> None:
    for route in yaml.safe_load(ROUTES_FILE.read_text())["routes"]:
        path, methods = route["path"], route["methods"]
        if not path.startswith(API + "/account/"):
            assert route.get("public") is True, path
        elif "/deposit/" in path or "/withdraw/" in path:
            assert route["permission"] == "withdraw", path
        elif methods == ["GET"]:
            assert route["permission"] == "read", path
        else:
            assert route["permission"] == "trade", path


# ---- the app builder's options ----------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "1"])
def test_stream_intervals_must_be_positive_seconds(bad: Any) -> None:
    for name in ("stream_tick", "stream_heartbeat"):
        with pytest.raises(ValueError, match=name):
            build_sandbox_app(**{name: bad})
