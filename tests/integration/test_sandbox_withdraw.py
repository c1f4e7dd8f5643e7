"""Needs: nothing but the sandbox exchange, served on a free port. POST
/public/v1/account/withdraw/crypto with the exchange's body: the answer, the funds leaving the
ledger, and each bad body refused with the exchange's code while nothing moves."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from sandbox import build_sandbox_app
from tests.support.servers import RunningApp, start_app

API = "/public/v1"
WITHDRAW = API + "/account/withdraw/crypto"
ALICE = {"X-Gateway-Account-Id": "alice"}


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningApp]:
    running = await start_app(build_sandbox_app())
    yield running
    await running.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession, sandbox: RunningApp, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, sandbox.url + path, **kwargs) as response:
        return response.status, await response.json()


async def ledger(http: aiohttp.ClientSession, sandbox: RunningApp) -> tuple[Any, Any]:
    """Alice's balances and withdrawal history, over REST."""
    _, balances = await call(http, sandbox, "GET", API + "/account/balances", headers=ALICE)
    _, history = await call(http, sandbox, "GET", API + "/account/withdrawals", headers=ALICE)
    return balances["balances"], history["withdrawal_history"]


async def test_withdraw_answers_like_the_exchange_and_moves_the_funds(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    address = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
    body = {"currency": "BTC", "amount": "0.1",
            "recipient": {"address": address, "destination_tag": "12345"}}
    status, sent = await call(http, sandbox, "POST", WITHDRAW, headers=ALICE, json=body)
    assert status == 201
    assert set(sent) == {"amount", "fee", "recipient", "destination_tag", "transaction_id"}
    assert (sent["amount"], sent["fee"]) == ("0.1", "0.0001")
    assert sent["recipient"] == address
    assert sent["destination_tag"] == "12345"
    uuid.UUID(sent["transaction_id"])
    balances, history = await ledger(http, sandbox)
    btc = next(b for b in balances if b["currency_code"] == "BTC")
    assert Decimal(btc["available"]) == Decimal("1.0") - Decimal("0.1") - Decimal("0.0001")
    recorded = [(w["transaction_id"], w["amount"], w["fee_amount"], w["currency"])
                for w in history]
    assert recorded == [(sent["transaction_id"], "0.1", "0.0001", "BTC")]


async def test_withdraw_without_a_tag_answers_an_empty_one(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    body = {"currency": "BTC", "amount": 0.25, "recipient": {"address": "bc1qexample"}}
    status, sent = await call(http, sandbox, "POST", WITHDRAW, headers=ALICE, json=body)
    assert (status, sent["amount"], sent["destination_tag"]) == (201, "0.25", "")


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"amount": "0.1", "recipient": {"address": "bc1qexample"}}, 400, "INVALID_CURRENCY"),
    ({"currency": "DOGE", "amount": "0.1", "recipient": {"address": "bc1qexample"}},
     400, "INVALID_CURRENCY"),
    ({"currency": "EUR", "amount": "10", "recipient": {"address": "bc1qexample"}},
     400, "INVALID_CURRENCY"),  # fiat goes through /withdraw/fiat
    ({"currency": "BTC", "recipient": {"address": "bc1qexample"}}, 400, "INVALID_AMOUNT"),
    ({"currency": "BTC", "amount": "abc", "recipient": {"address": "bc1qexample"}},
     400, "INVALID_AMOUNT"),
    ({"currency": "BTC", "amount": "NaN", "recipient": {"address": "bc1qexample"}},
     400, "INVALID_AMOUNT"),
    ({"currency": "BTC", "amount": "0", "recipient": {"address": "bc1qexample"}},
     400, "INVALID_AMOUNT"),
    ({"currency": "BTC", "amount": True, "recipient": {"address": "bc1qexample"}},
     400, "INVALID_AMOUNT"),
    ({"currency": "BTC", "amount": "-0.1", "recipient": {"address": "bc1qexample"}},
     400, "NEGATIVE_AMOUNT"),
    ({"currency": "BTC", "amount": "0.000000001", "recipient": {"address": "bc1qexample"}},
     400, "BAD_AMOUNT_PRECISION"),
    ({"currency": "BTC", "amount": "0.1"}, 400, "INVALID_ADDRESS"),
    ({"currency": "BTC", "amount": "0.1", "recipient": "bc1qexample"}, 400, "INVALID_ADDRESS"),
    ({"currency": "BTC", "amount": "0.1", "recipient": {"address": "  "}}, 400, "INVALID_ADDRESS"),
    ({"currency": "BTC", "amount": "0.1", "recipient": {"address": "bc1q example"}},
     400, "INVALID_ADDRESS"),
    ({"currency": "BTC", "amount": "0.1", "recipient": {"address": "<script>alert(1)</script>"}},
     400, "INVALID_ADDRESS"),
    ({"currency": "BTC", "amount": "0.1", "recipient": {"address": "bc1q\nX-Injected: 1"}},
     400, "INVALID_ADDRESS"),
    ({"currency": "BTC", "amount": "0.1", "recipient": {"address": "b" * 129}},
     400, "INVALID_ADDRESS"),
    ({"currency": "BTC", "amount": "0.1",
      "recipient": {"address": "bc1qexample", "destination_tag": 12}},
     400, "INVALID_DESTINATION_TAG"),
    ({"currency": "BTC", "amount": "0.1",
      "recipient": {"address": "bc1qexample", "destination_tag": "1 2"}},
     400, "INVALID_DESTINATION_TAG"),
    ({"currency": "BTC", "amount": "0.1",
      "recipient": {"address": "bc1qexample", "destination_tag": "9" * 65}},
     400, "INVALID_DESTINATION_TAG"),
    ({"currency": "BTC", "amount": "1.0", "recipient": {"address": "bc1qexample"}},
     422, "INSUFFICIENT_FUNDS"),  # 1.0 BTC held, but the fee comes on top
    ({"currency": "ETH", "amount": "0.1", "recipient": {"address": "0xabc"}},
     422, "INSUFFICIENT_FUNDS"),
])
async def test_bad_withdrawals_are_refused_and_move_nothing(
    sandbox: RunningApp, http: aiohttp.ClientSession, body: dict[str, object], status: int,
    code: str,
) -> None:
    before = await ledger(http, sandbox)
    answer = await call(http, sandbox, "POST", WITHDRAW, headers=ALICE, json=body)
    assert answer == (status, {"error": code})
    assert await ledger(http, sandbox) == before


async def test_a_body_that_is_not_a_json_object_is_refused(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    for data in (b"{", b"[1]", b"\xff\xfe"):
        status, body = await call(http, sandbox, "POST", WITHDRAW, headers=ALICE, data=data)
        assert (status, body) == (400, {"error": "INVALID_QUERY"})


async def test_withdraw_needs_the_account_header(
    sandbox: RunningApp, http: aiohttp.ClientSession
) -> None:
    body = {"currency": "BTC", "amount": "0.1", "recipient": {"address": "bc1qexample"}}
    assert await call(http, sandbox, "POST", WITHDRAW, json=body) == (
        401, {"error": "MISSING_CREDENTIALS"})
