"""What an account holds, and each record's JSON exactly as the exchange writes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from .amounts import ZERO, fmt
from .clock import iso
from .market import Instrument

__all__ = [
    "ACTIVE_STATUSES",
    "Balance",
    "DepositAddress",
    "Order",
    "OrderRequest",
    "Trade",
    "Transfer",
]

# "FILLED" is the exchange's word for partially filled and still open.
ACTIVE_STATUSES = frozenset({"OPEN", "STOP_TRIGGERED", "FILLED"})


@dataclass(slots=True)
class Balance:
    account_id: str
    currency_code: str
    time: datetime
    available: Decimal = ZERO
    locked: Decimal = ZERO
    change: Decimal = ZERO
    sequence: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "account_id": self.account_id,
            "currency_code": self.currency_code,
            "change": fmt(self.change),
            "available": fmt(self.available),
            "locked": fmt(self.locked),
            "sequence": self.sequence,
            "time": iso(self.time),
        }


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated POST /account/orders body."""

    instrument: Instrument
    side: str
    type: str
    amount: Decimal
    price: Decimal | None
    trigger_price: Decimal | None
    client_id: str | None
    time_in_force: str | None
    is_post_only: bool


@dataclass(slots=True)
class Trade:
    trade_id: str
    order_id: str
    account_id: str
    instrument_code: str
    side: str
    amount: Decimal
    price: Decimal
    time: datetime
    sequence: int
    fee_amount: Decimal
    fee_currency: str
    fee_percentage: Decimal
    running_trading_volume: Decimal

    def trade_json(self) -> dict[str, object]:
        return {
            "trade_id": self.trade_id,
            "order_id": self.order_id,
            "account_id": self.account_id,
            "amount": fmt(self.amount),
            "side": self.side,
            "instrument_code": self.instrument_code,
            "price": fmt(self.price),
            "time": iso(self.time),
            "price_tick_sequence": self.sequence,
            "sequence": self.sequence,
        }

    def fee_json(self) -> dict[str, object]:
        return {
            "fee_amount": fmt(self.fee_amount),
            "fee_percentage": fmt(self.fee_percentage),
            "fee_group_id": "default",
            "running_trading_volume": fmt(self.running_trading_volume),
            "fee_currency": self.fee_currency,
            "fee_type": "TAKER",  # sandbox fills are always immediate, hence taker
        }

    def as_json(self) -> dict[str, object]:
        return {"trade": self.trade_json(), "fee": self.fee_json()}


@dataclass(slots=True)
class Order:
    order_id: str
    account_id: str
    instrument: Instrument
    side: str
    type: str
    amount: Decimal
    price: Decimal | None
    trigger_price: Decimal | None
    client_id: str | None
    time_in_force: str | None
    is_post_only: bool
    time: datetime
    sequence: int
    status: str = "OPEN"
    filled_amount: Decimal = ZERO
    average_price: Decimal | None = None
    locked: Decimal = ZERO  # funds this order holds, in `locked_currency`
    time_last_updated: datetime | None = None
    trades: list[Trade] = field(default_factory=list)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def locked_currency(self) -> str:
        item = self.instrument
        return item.quote.code if self.side == "BUY" else item.base.code

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "order_id": self.order_id,
            "account_id": self.account_id,
            "instrument_code": self.instrument.code,
            "time": iso(self.time),
            "side": self.side,
            "amount": fmt(self.amount),
            "filled_amount": fmt(self.filled_amount),
            "type": self.type,
            "status": self.status,
            "sequence": self.sequence,
            "time_last_updated": iso(self.time_last_updated or self.time),
        }
        if self.client_id is not None:
            body["client_id"] = self.client_id
        if self.price is not None:
            body["price"] = fmt(self.price)
        if self.average_price is not None:
            body["average_price"] = fmt(self.average_price)
        if self.trigger_price is not None:
            body["trigger_price"] = fmt(self.trigger_price)
        if self.time_in_force is not None:
            body["time_in_force"] = self.time_in_force
            body["is_post_only"] = self.is_post_only
        return body

    def as_history_json(self, *, with_trades: bool = True) -> dict[str, object]:
        """The ``{"order": ..., "trades": [...]}`` form of GET endpoints."""
        body: dict[str, object] = {"order": self.as_json()}
        if with_trades:
            body["trades"] = [trade.as_json() for trade in self.trades]
        return body


@dataclass(slots=True)
class Transfer:
    """A deposit or a withdrawal."""

    transaction_id: str
    account_id: str
    type: str  # CRYPTO or FIAT
    funds_source: str  # EXTERNAL, or INTERNAL (from/to the sister retail platform)
    currency: str
    amount: Decimal
    fee_amount: Decimal
    time: datetime
    recipient: str | None = None
    destination_tag: str | None = None
    blockchain_transaction_id: str | None = None

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "transaction_id": self.transaction_id,
            "account_id": self.account_id,
            "amount": fmt(self.amount),
            "type": self.type,
            "funds_source": self.funds_source,
            "time": iso(self.time),
            "currency": self.currency,
            "fee_amount": fmt(self.fee_amount),
            "fee_currency": self.currency,
        }
        if self.blockchain_transaction_id is not None:
            body["blockchain_transaction_id"] = self.blockchain_transaction_id
        return body


@dataclass(slots=True)
class DepositAddress:
    address: str
    destination_tag: str | None = None
    is_smart_contract: bool = False

    def as_json(self, *, can_create_more: bool) -> dict[str, object]:
        body: dict[str, object] = {
            "address": self.address,
            "enabled": True,
            "is_smart_contract": self.is_smart_contract,
            "can_create_more": can_create_more,
        }
        if self.destination_tag is not None:
            body["destination_tag"] = self.destination_tag
        return body
