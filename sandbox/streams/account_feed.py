"""The private channels' messages: ACCOUNT_HISTORY snapshots and updates, TRADING events.

ACCOUNT_HISTORY opens with ``BALANCES_SNAPSHOT``, ``ACTIVE_ORDERS_SNAPSHOT`` and
``INACTIVE_ORDERS_SNAPSHOT``, then sends one ``ACCOUNT_UPDATE`` per ledger event. TRADING sends
the order book's view of the account's orders: ``BOOKED``, ``STOP_TRACKED``, ``FILL``,
``DONE``, ``UPDATE``. Both render an event at once (see `sandbox.events`).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from ..amounts import fmt
from ..clock import iso
from ..events import (
    AccountEvent,
    FundsMoved,
    OrderClosed,
    OrderCreated,
    TradeSettled,
)
from ..ledger import Account
from ..records import Order
from .messages import on_channel

__all__ = ["INACTIVE_SNAPSHOT_LIMIT", "account_update", "snapshots", "trading_messages"]

INACTIVE_SNAPSHOT_LIMIT = 50  # the most recent inactive orders in INACTIVE_ORDERS_SNAPSHOT
_HISTORY = "ACCOUNT_HISTORY"
_TRADING = "TRADING"


def snapshots(account: Account, moment: datetime) -> list[dict[str, object]]:
    """What ACCOUNT_HISTORY sends on subscribe: balances, then active and inactive orders."""
    orders = list(account.orders.values())
    active = [order.as_history_json() for order in orders if order.is_active]
    inactive = [order.as_history_json() for order in orders if not order.is_active]
    account_id = account.account_id
    balances = [balance.as_json() for balance in account.balances.values()]
    return [
        on_channel(
            {"account_id": account_id, "balances": balances}, _HISTORY, "BALANCES_SNAPSHOT", moment
        ),
        on_channel(
            {"account_id": account_id, "orders": active}, _HISTORY, "ACTIVE_ORDERS_SNAPSHOT", moment
        ),
        on_channel(
            {"account_id": account_id, "orders": inactive[-INACTIVE_SNAPSHOT_LIMIT:][::-1]},
            _HISTORY,
            "INACTIVE_ORDERS_SNAPSHOT",
            moment,
        ),
    ]


def _order_ids(order: Order) -> dict[str, object]:
    ids: dict[str, object] = {"order_id": order.order_id}
    if order.client_id is not None:
        ids["client_id"] = order.client_id
    return ids


def _update_body(event: AccountEvent) -> dict[str, object]:
    """The ``update`` object of an ACCOUNT_UPDATE, without its envelope fields."""
    if isinstance(event, FundsMoved):
        transfer = event.transfer
        return {
            "type": "FUNDS_DEPOSITED" if event.is_deposit else "FUNDS_WITHDRAWN",
            "activity": "FUNDING",
            "credited" if event.is_deposit else "deducted": event.movement.as_json(),
            "transaction": {
                "transaction_id": transfer.transaction_id,
                "is_internal": transfer.funds_source == "INTERNAL",
                "fee_amount": fmt(transfer.fee_amount),
                "fee_currency": transfer.currency,
            },
        }
    order = event.order
    body: dict[str, object] = {"activity": "TRADING", **_order_ids(order)}
    if isinstance(event, OrderCreated):
        body["type"] = "ORDER_CREATED"
        body["order"] = order.as_json()
        if event.locked is not None:
            body["locked"] = event.locked.as_json()
    elif isinstance(event, TradeSettled):
        body["type"] = "TRADE_SETTLED"
        body["order_book_sequence"] = event.trade.sequence
        body["filled_amount"] = fmt(order.filled_amount)
        body["order"] = {"amount": fmt(order.amount), "filled_amount": fmt(order.filled_amount)}
        body["trade"] = event.trade.trade_json()
        body["fee"] = {**event.trade.fee_json(), "collection_type": "STANDARD"}
        body["spent"] = event.spent.as_json()
        body["credited"] = event.credited.as_json()
    elif isinstance(event, OrderClosed):
        body["type"] = "ORDER_CLOSED"
        body["filled_amount"] = fmt(order.filled_amount)
        if event.unlocked is not None:
            body["unlocked"] = event.unlocked.as_json()
    else:
        body["type"] = "ORDER_UPDATED"
        body["order"] = {"amount": fmt(order.amount), "filled_amount": fmt(order.filled_amount)}
        # A larger order holds more, a smaller one releases some.
        held = "locked" if event.amount_delta > 0 else "unlocked"
        body[held] = event.movement.as_json()
    return body


def account_update(account_id: str, event: AccountEvent) -> dict[str, object]:
    """The ACCOUNT_UPDATE message of `event`."""
    update = {
        **_update_body(event),
        "account_id": account_id,
        "time": iso(event.time),
        "id": str(uuid.uuid4()),
        "sequence": event.sequence,
    }
    body: dict[str, object] = {"account_id": account_id, "sequence": event.sequence}
    body["update"] = update
    return on_channel(body, _HISTORY, "ACCOUNT_UPDATE", event.time)


def _remaining(order: Order) -> str:
    return fmt(order.amount - order.filled_amount)


def _trading(order: Order, kind: str, moment: datetime, **fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        **_order_ids(order),
        "instrument_code": order.instrument.code,
        "side": order.side,
        "amount": fmt(order.amount),
        "remaining": _remaining(order),
        "order_book_sequence": order.sequence,
        **fields,
    }
    return on_channel(body, _TRADING, kind, moment)


def trading_messages(event: AccountEvent) -> list[dict[str, object]]:
    """What TRADING sends for `event` (nothing for funding, or an order not yet on the book)."""
    if isinstance(event, FundsMoved):
        return []
    order, moment = event.order, event.time
    if isinstance(event, OrderCreated):
        if event.locked is None:
            return []  # filled or closed at once: FILL/DONE follow
        if order.type == "STOP":
            trigger = fmt(order.trigger_price) if order.trigger_price is not None else None
            current = fmt(order.instrument.price)
            return [
                _trading(
                    order, "STOP_TRACKED", moment, trigger_price=trigger, current_price=current
                )
            ]
        price = fmt(order.price) if order.price is not None else None
        return [_trading(order, "BOOKED", moment, price=price)]
    if isinstance(event, TradeSettled):
        trade = event.trade
        fill = _trading(
            order,
            "FILL",
            moment,
            trade_id=trade.trade_id,
            matched_as="TAKER",
            matched_amount=fmt(trade.amount),
            matched_price=fmt(trade.price),
        )
        done = _trading(order, "DONE", moment, status="FILLED_FULLY")
        return [fill, done]
    if isinstance(event, OrderClosed):
        return [_trading(order, "DONE", moment, status=event.reason)]
    return [
        _trading(
            order,
            "UPDATE",
            moment,
            status="APPLIED",
            amount_delta=fmt(event.amount_delta),
            modification_id=str(uuid.uuid4()),
        )
    ]
