"""The ledger tells its observer of every change, in order, with the balances it left."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest

from sandbox.clock import now
from sandbox.errors import SandboxError
from sandbox.events import (
    AccountEvent,
    FundsMoved,
    Movement,
    OrderAmended,
    OrderClosed,
    OrderCreated,
    TradeSettled,
)
from sandbox.ledger import Exchange
from sandbox.streams.account_feed import account_update, trading_messages
from sandbox.trading import parse_order_request

Heard = list[tuple[str, AccountEvent]]


@pytest.fixture
def heard() -> Heard:
    return []


@pytest.fixture
def exchange(heard: Heard) -> Exchange:
    return Exchange(observer=lambda account_id, event: heard.append((account_id, event)))


def order(**body: object) -> dict[str, object]:
    return {"instrument_code": "BTC_EUR", "side": "BUY", "amount": "0.1", **body}


def test_a_new_account_reports_its_seed_deposits(exchange: Exchange, heard: Heard) -> None:
    exchange.account("alice")
    assert [(account_id, type(event)) for account_id, event in heard] == [
        ("alice", FundsMoved), ("alice", FundsMoved)]
    deposit = heard[0][1]
    assert isinstance(deposit, FundsMoved) and deposit.is_deposit
    assert deposit.movement == Movement("EUR", Decimal("10000.00"), Decimal("10000.00"),
                                        Decimal(0))


def test_a_resting_order_then_its_cancel(exchange: Exchange, heard: Heard) -> None:
    alice = exchange.account("alice")
    heard.clear()
    placed = alice.place(parse_order_request(order(type="LIMIT", price="50000")), now())
    alice.cancel(placed, now())
    created, closed = (event for _, event in heard)
    assert isinstance(created, OrderCreated) and isinstance(closed, OrderClosed)
    assert created.locked == Movement("EUR", Decimal("5000.00"), Decimal("5000.00"),
                                      Decimal("5000.00"))
    assert closed.unlocked == Movement("EUR", Decimal("5000.00"), Decimal("10000.00"),
                                       Decimal("0.00"))
    assert closed.reason == "CANCELLED"
    assert created.sequence < closed.sequence


def test_a_market_order_reports_creation_then_settlement(
    exchange: Exchange, heard: Heard
) -> None:
    alice = exchange.account("alice")
    heard.clear()
    alice.place(parse_order_request(order(type="MARKET")), now())
    created, settled = (event for _, event in heard)
    assert isinstance(created, OrderCreated) and created.locked is None
    assert isinstance(settled, TradeSettled)
    assert settled.spent == Movement("EUR", Decimal("6000.00"), Decimal("4000.00"), Decimal(0))
    assert settled.credited.currency_code == "BTC"
    assert settled.credited.amount == Decimal("0.1") - settled.trade.fee_amount
    assert settled.credited.new_available == alice.available("BTC")


def test_an_immediate_order_with_nothing_to_match_closes(exchange: Exchange, heard: Heard) -> None:
    alice = exchange.account("alice")
    heard.clear()
    alice.place(parse_order_request(
        order(type="LIMIT", price="50000", time_in_force="IMMEDIATE_OR_CANCELLED")), now())
    created, closed = (event for _, event in heard)
    assert isinstance(created, OrderCreated) and isinstance(closed, OrderClosed)
    assert (closed.reason, closed.unlocked) == ("INSUFFICIENT_LIQUIDITY", None)
    assert [m["status"] for m in trading_messages(closed)] == ["INSUFFICIENT_LIQUIDITY"]


def test_amend_and_withdraw(exchange: Exchange, heard: Heard) -> None:
    alice = exchange.account("alice")
    placed = alice.place(parse_order_request(order(type="LIMIT", price="50000")), now())
    heard.clear()
    alice.amend(placed, Decimal("0.05"), now())
    alice.withdraw("BTC", Decimal("0.5"), now(), recipient="bc1qx", destination_tag=None)
    amended, withdrawn = (event for _, event in heard)
    assert isinstance(amended, OrderAmended) and amended.amount_delta == Decimal("-0.05")
    assert amended.movement.amount == Decimal("2500.00")
    update = account_update("alice", amended)["update"]
    assert isinstance(update, dict) and update["unlocked"]["amount"] == "2500.0"
    assert isinstance(withdrawn, FundsMoved) and not withdrawn.is_deposit
    assert withdrawn.movement.amount == Decimal("0.5001")  # the fee leaves too


def test_refused_changes_report_nothing(exchange: Exchange, heard: Heard) -> None:
    alice = exchange.account("alice")
    heard.clear()
    with pytest.raises(SandboxError):
        alice.place(parse_order_request(order(type="MARKET", amount="1")), now())
    with pytest.raises(SandboxError):
        alice.withdraw("BTC", Decimal("5"), now(), recipient="bc1qx", destination_tag=None)
    with pytest.raises(SandboxError):
        alice.order(str(uuid.uuid4()))
    assert heard == []


def test_the_dead_man_s_switch_reports_its_cancels(exchange: Exchange, heard: Heard) -> None:
    alice = exchange.account("alice")
    alice.place(parse_order_request(order(type="LIMIT", price="50000")), now())
    alice.arm_cancel_all(timedelta(milliseconds=-1), now())
    heard.clear()
    exchange.account("alice")  # any later request fires the switch
    assert [type(event) for _, event in heard] == [OrderClosed]


def test_an_exchange_without_observer_still_trades() -> None:
    alice = Exchange().account("alice")
    alice.place(parse_order_request(order(type="MARKET")), now())
    assert alice.available("EUR") == Decimal("4000.00")
