"""Per-account state and the order engine: every price is fixed, so fills are immediate.

A MARKET order (or a LIMIT order priced through the market) fills at once at the instrument's
fixed price, as a taker; any other order rests, holding its funds, until it is cancelled.
"""

from __future__ import annotations

import itertools
import secrets
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

from .amounts import ZERO
from .clock import now
from .errors import SandboxError
from .events import (
    AccountEvent,
    FundsMoved,
    Movement,
    Observer,
    OrderAmended,
    OrderClosed,
    OrderCreated,
    TradeSettled,
)
from .market import CURRENCIES, FIAT, TAKER_FEE_PERCENT, btc_value
from .records import Balance, DepositAddress, Order, OrderRequest, Trade, Transfer

__all__ = ["MAX_OPEN_ORDERS", "SEED_BALANCES", "Account", "Exchange", "is_uuid"]

MAX_OPEN_ORDERS = 200
SEED_BALANCES = (("EUR", Decimal("10000.00")), ("BTC", Decimal("1.0")))
# Tokens on the same chain share one address; the exchange allows one per account.
_ERC20 = frozenset({"ETH", "USDT", "BEST"})


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _fake_address(code: str) -> str:
    if code in _ERC20:
        return "0x" + secrets.token_hex(20)
    return "bc1q" + secrets.token_hex(19)


class Account:
    """One account's balances, orders, trades and transfers; each change goes to the observer."""

    __slots__ = (
        "_observer",
        "_sequence",
        "account_id",
        "addresses",
        "balances",
        "cancel_all_at",
        "client_ids",
        "collect_fees_in_best",
        "deposits",
        "orders",
        "trades",
        "trading_volume",
        "withdrawals",
    )

    def __init__(
        self, account_id: str, sequence: Iterator[int], observer: Observer | None = None
    ) -> None:
        self._sequence = sequence
        self._observer = observer
        self.account_id = account_id
        self.balances: dict[str, Balance] = {}
        self.orders: dict[str, Order] = {}  # creation order
        self.client_ids: dict[str, str] = {}
        self.trades: dict[str, Trade] = {}
        self.deposits: list[Transfer] = []
        self.withdrawals: list[Transfer] = []
        self.addresses: dict[str, DepositAddress] = {}
        self.trading_volume = ZERO
        self.collect_fees_in_best = False
        self.cancel_all_at: datetime | None = None

    # -- balances -------------------------------------------------------------------------

    def available(self, code: str) -> Decimal:
        balance = self.balances.get(code)
        return balance.available if balance is not None else ZERO

    def _move(self, code: str, available: Decimal, locked: Decimal, moment: datetime) -> Balance:
        balance = self.balances.get(code)
        if balance is None:
            balance = self.balances[code] = Balance(self.account_id, code, moment)
        balance.available += available
        balance.locked += locked
        balance.change = available + locked
        balance.sequence = next(self._sequence)
        balance.time = moment
        return balance

    def _emit(self, event: AccountEvent) -> None:
        if self._observer is not None:
            self._observer(self.account_id, event)

    def _require(self, code: str, amount: Decimal) -> None:
        if self.available(code) < amount:
            raise SandboxError(422, "INSUFFICIENT_FUNDS")

    def seed(self, moment: datetime) -> None:
        """A new account arrives with money, deposited the way real money arrives."""
        for code, amount in SEED_BALANCES:
            is_fiat = code in FIAT
            self.deposit(code, amount, moment, is_fiat=is_fiat)
            if not is_fiat:
                self.addresses[code] = DepositAddress(_fake_address(code))

    def deposit(self, code: str, amount: Decimal, moment: datetime, *, is_fiat: bool) -> None:
        balance = self._move(code, amount, ZERO, moment)
        transfer = Transfer(
            transaction_id=str(uuid.uuid4()),
            account_id=self.account_id,
            type="FIAT" if is_fiat else "CRYPTO",
            funds_source="EXTERNAL",
            currency=code,
            amount=amount,
            fee_amount=ZERO,
            time=moment,
            blockchain_transaction_id=None if is_fiat else secrets.token_hex(32),
        )
        self.deposits.append(transfer)
        movement = Movement.of(balance, amount)
        self._emit(FundsMoved(transfer, movement, True, moment, next(self._sequence)))

    # -- orders ---------------------------------------------------------------------------

    def order(self, order_id: str) -> Order:
        if not is_uuid(order_id):
            raise SandboxError(400, "INVALID_ORDER_ID")
        found = self.orders.get(order_id)
        if found is None:
            raise SandboxError(404, "ORDER_NOT_FOUND")
        return found

    def order_by_client_id(self, client_id: str) -> Order:
        if not is_uuid(client_id):
            raise SandboxError(400, "INVALID_CLIENT_UUID")
        order_id = self.client_ids.get(client_id)
        if order_id is None:
            raise SandboxError(404, "ORDER_NOT_FOUND")
        return self.orders[order_id]

    def place(self, request: OrderRequest, moment: datetime) -> Order:
        item = request.instrument
        if sum(order.is_active for order in self.orders.values()) >= MAX_OPEN_ORDERS:
            raise SandboxError(422, "MAX_OPEN_ORDERS_EXCEEDED")
        if request.client_id is not None and request.client_id in self.client_ids:
            raise SandboxError(400, "INVALID_CLIENT_UUID")
        is_buy = request.side == "BUY"
        limit = request.price
        marketable = request.type == "MARKET" or (
            request.type == "LIMIT"
            and limit is not None
            and (limit >= item.price if is_buy else limit <= item.price)
        )
        if request.amount * (limit or item.price) < item.min_size:
            raise SandboxError(422, "MIN_SIZE_NOT_SATISFIED")
        # Funds needed: the quote currency at the worst price for a buy, the amount for a sell.
        needed = (
            item.quote.quantize(request.amount * (limit or item.price))
            if is_buy
            else request.amount
        )
        self._require(item.quote.code if is_buy else item.base.code, needed)
        order = Order(
            order_id=str(uuid.uuid4()),
            account_id=self.account_id,
            instrument=item,
            side=request.side,
            type=request.type,
            amount=request.amount,
            price=limit,
            trigger_price=request.trigger_price,
            client_id=request.client_id,
            time_in_force=request.time_in_force,
            is_post_only=request.is_post_only,
            time=moment,
            sequence=next(self._sequence),
        )
        self.orders[order.order_id] = order
        if request.client_id is not None:
            self.client_ids[request.client_id] = order.order_id
        if marketable:
            self._emit(OrderCreated(order, None, moment, next(self._sequence)))
            self._fill(order, moment)
        elif request.time_in_force in ("IMMEDIATE_OR_CANCELLED", "FILL_OR_KILL"):
            self._emit(OrderCreated(order, None, moment, next(self._sequence)))
            order.status = "CLOSED"  # nothing to match at once, so nothing is kept
            order.time_last_updated = moment
            reason = "INSUFFICIENT_LIQUIDITY"
            self._emit(OrderClosed(order, None, reason, moment, next(self._sequence)))
        else:
            order.locked = needed
            balance = self._move(order.locked_currency, -needed, needed, moment)
            locked = Movement.of(balance, needed)
            self._emit(OrderCreated(order, locked, moment, next(self._sequence)))
        return order

    def _fill(self, order: Order, moment: datetime) -> None:
        item = order.instrument
        price = item.price
        cost = item.quote.quantize(order.amount * price)
        rate = TAKER_FEE_PERCENT / 100
        # The fee is taken from what the order receives, as on the exchange.
        if order.side == "BUY":
            fee_currency = item.base
            fee = item.base.quantize(order.amount * rate)
            spent = Movement.of(self._move(item.quote.code, -cost, ZERO, moment), cost)
            got = order.amount - fee
            credited = Movement.of(self._move(item.base.code, got, ZERO, moment), got)
        else:
            fee_currency = item.quote
            fee = item.quote.quantize(cost * rate)
            balance = self._move(item.base.code, -order.amount, ZERO, moment)
            spent = Movement.of(balance, order.amount)
            got = cost - fee
            credited = Movement.of(self._move(item.quote.code, got, ZERO, moment), got)
        self.trading_volume += btc_value(order.amount, item.base.code)
        trade = Trade(
            trade_id=str(uuid.uuid4()),
            order_id=order.order_id,
            account_id=self.account_id,
            instrument_code=item.code,
            side=order.side,
            amount=order.amount,
            price=price,
            time=moment,
            sequence=next(self._sequence),
            fee_amount=fee,
            fee_currency=fee_currency.code,
            fee_percentage=TAKER_FEE_PERCENT,
            running_trading_volume=self.trading_volume,
        )
        self.trades[trade.trade_id] = trade
        order.trades.append(trade)
        order.filled_amount = order.amount
        order.average_price = price
        order.status = "FILLED_FULLY"
        order.time_last_updated = moment
        event = TradeSettled(order, trade, spent, credited, moment, next(self._sequence))
        self._emit(event)

    def cancel(self, order: Order, moment: datetime) -> None:
        if not order.is_active:
            raise SandboxError(404, "ORDER_NOT_FOUND")
        held = order.locked
        balance = self._move(order.locked_currency, held, -held, moment)
        order.locked = ZERO
        order.status = "FILLED_CLOSED" if order.filled_amount else "CLOSED"
        order.time_last_updated = moment
        unlocked = Movement.of(balance, held)
        self._emit(OrderClosed(order, unlocked, "CANCELLED", moment, next(self._sequence)))

    def cancel_all(
        self,
        moment: datetime,
        instrument_code: str | None = None,
        ids: frozenset[str] | None = None,
    ) -> list[str]:
        cancelled: list[str] = []
        for order in self.orders.values():
            if not order.is_active:
                continue
            if instrument_code is not None and order.instrument.code != instrument_code:
                continue
            if ids is not None and order.order_id not in ids:
                continue
            self.cancel(order, moment)
            cancelled.append(order.order_id)
        return cancelled

    def amend(self, order: Order, amount: Decimal, moment: datetime) -> None:
        """Change a resting order's amount, re-sizing the funds it holds."""
        if not order.is_active:
            raise SandboxError(404, "ORDER_NOT_FOUND")
        if amount < order.filled_amount:
            raise SandboxError(400, "INVALID_AMOUNT")
        item = order.instrument
        price = order.price or item.price
        needed = item.quote.quantize(amount * price) if order.side == "BUY" else amount
        delta = needed - order.locked
        if delta > 0:
            self._require(order.locked_currency, delta)
        balance = self._move(order.locked_currency, -delta, delta, moment)
        amount_delta = amount - order.amount
        order.locked = needed
        order.amount = amount
        order.time_last_updated = moment
        movement = Movement.of(balance, abs(delta))
        self._emit(OrderAmended(order, amount_delta, movement, moment, next(self._sequence)))

    def arm_cancel_all(self, timeout: timedelta | None, moment: datetime) -> None:
        """The dead man's switch: cancel everything unless re-armed before `timeout`."""
        self.cancel_all_at = None if timeout is None else moment + timeout

    def fire_cancel_all(self, moment: datetime) -> None:
        if self.cancel_all_at is not None and moment >= self.cancel_all_at:
            self.cancel_all_at = None
            self.cancel_all(moment)

    # -- funding --------------------------------------------------------------------------

    def create_address(self, code: str) -> DepositAddress:
        if code in self.addresses and code in _ERC20:
            raise SandboxError(422, "ONLY_ONE_ERC20_ADDRESS_ALLOWED")
        address = self.addresses[code] = DepositAddress(_fake_address(code))
        return address

    def withdraw(
        self,
        code: str,
        amount: Decimal,
        moment: datetime,
        *,
        recipient: str | None,
        destination_tag: str | None,
    ) -> Transfer:
        currency = CURRENCIES[code]
        is_fiat = code in FIAT
        fee = currency.withdrawal_fee
        self._require(code, amount + fee)
        balance = self._move(code, -(amount + fee), ZERO, moment)
        transfer = Transfer(
            transaction_id=str(uuid.uuid4()),
            account_id=self.account_id,
            type="FIAT" if is_fiat else "CRYPTO",
            funds_source="EXTERNAL",
            currency=code,
            amount=amount,
            fee_amount=fee,
            time=moment,
            recipient=recipient,
            destination_tag=destination_tag,
            blockchain_transaction_id=None if is_fiat else secrets.token_hex(32),
        )
        self.withdrawals.append(transfer)
        movement = Movement.of(balance, amount + fee)
        self._emit(FundsMoved(transfer, movement, False, moment, next(self._sequence)))
        return transfer


class Exchange:
    """All accounts, created (and funded) the first time an account id is seen.

    `observer`, when given, is told of every change to every account (see `events`).
    """

    __slots__ = ("_accounts", "_sequence", "observer")

    def __init__(self, observer: Observer | None = None) -> None:
        self._accounts: dict[str, Account] = {}
        self._sequence = itertools.count(1)
        self.observer = observer

    def account(self, account_id: str) -> Account:
        moment = now()
        found = self._accounts.get(account_id)
        if found is None:
            found = Account(account_id, self._sequence, self._notify)
            self._accounts[account_id] = found
            found.seed(moment)
        found.fire_cancel_all(moment)
        return found

    def _notify(self, account_id: str, event: AccountEvent) -> None:
        # Looked up per event, so an observer set after accounts exist still hears them.
        if self.observer is not None:
            self.observer(account_id, event)

    def reset(self) -> None:
        self._accounts.clear()
