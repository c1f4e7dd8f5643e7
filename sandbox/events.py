"""What happened to an account: the ledger reports each change, the streams render it.

An event is handed to the observer synchronously, while the records it refers to are in the
state the event describes, so the observer must render it at once and not keep the records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from .amounts import fmt
from .records import Balance, Order, Trade, Transfer

__all__ = [
    "AccountEvent",
    "FundsMoved",
    "Movement",
    "Observer",
    "OrderAmended",
    "OrderClosed",
    "OrderCreated",
    "TradeSettled",
]


@dataclass(frozen=True, slots=True)
class Movement:
    """An amount of one currency moved, and the balance it left behind."""

    currency_code: str
    amount: Decimal
    new_available: Decimal
    new_locked: Decimal

    @classmethod
    def of(cls, balance: Balance, amount: Decimal) -> Movement:
        return cls(balance.currency_code, amount, balance.available, balance.locked)

    def as_json(self) -> dict[str, object]:
        return {
            "currency_code": self.currency_code,
            "amount": fmt(self.amount),
            "new_available": fmt(self.new_available),
            "new_locked": fmt(self.new_locked),
        }


@dataclass(frozen=True, slots=True)
class OrderCreated:
    """An order was accepted; `locked` is what it holds while it rests (None: it holds none)."""

    order: Order
    locked: Movement | None
    time: datetime
    sequence: int


@dataclass(frozen=True, slots=True)
class TradeSettled:
    """A fill: `spent` left the account, `credited` (net of the fee) arrived."""

    order: Order
    trade: Trade
    spent: Movement
    credited: Movement
    time: datetime
    sequence: int


@dataclass(frozen=True, slots=True)
class OrderClosed:
    """An order left the book without (further) fills: `reason` is ``CANCELLED``, or
    ``INSUFFICIENT_LIQUIDITY`` for an immediate-or-cancel order with nothing to match."""

    order: Order
    unlocked: Movement | None
    reason: str
    time: datetime
    sequence: int


@dataclass(frozen=True, slots=True)
class OrderAmended:
    """A resting order's amount changed by `amount_delta`; `movement` re-sized its hold."""

    order: Order
    amount_delta: Decimal
    movement: Movement
    time: datetime
    sequence: int


@dataclass(frozen=True, slots=True)
class FundsMoved:
    """A deposit arrived (`is_deposit`) or a withdrawal, fee included, left the account."""

    transfer: Transfer
    movement: Movement
    is_deposit: bool
    time: datetime
    sequence: int


AccountEvent = OrderCreated | TradeSettled | OrderClosed | OrderAmended | FundsMoved
# Called with the account id and the event.
Observer = Callable[[str, AccountEvent], None]
