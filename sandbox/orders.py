"""Order and trade history: the read-only order endpoints."""

from __future__ import annotations

from aiohttp import web

from .errors import SandboxError
from .ledger import Account, is_uuid
from .market import instrument
from .paging import HistoryQuery, flag
from .records import ACTIVE_STATUSES, Order, Trade

__all__ = [
    "get_order",
    "get_order_by_client_id",
    "get_order_trades",
    "get_trade",
    "list_orders",
    "list_trades",
]

_JUST_FILLED = frozenset({"FILLED_FULLY"})
_CANCELLED_OR_REJECTED = frozenset(
    {"FILLED_FULLY", "FILLED_CLOSED", "CLOSED", "REJECTED", "FILLED_REJECTED"}
)


def _instrument_filter(request: web.Request) -> str | None:
    code = request.query.get("instrument_code")
    return None if code is None else instrument(code).code


def _trade_json(trade: Trade) -> object:
    return trade.as_json()


async def list_orders(request: web.Request, account: Account) -> web.Response:
    """Open orders by default; the exchange's flags add the inactive ones."""
    query = HistoryQuery.parse(request.query)
    code = _instrument_filter(request)
    statuses = set(ACTIVE_STATUSES)
    if flag(request.query, "with_cancelled_and_rejected"):
        statuses |= _CANCELLED_OR_REJECTED
    elif flag(request.query, "with_just_filled_inactive"):
        statuses |= _JUST_FILLED
    with_trades = not flag(request.query, "with_just_orders")
    selected = [
        order
        for order in reversed(account.orders.values())
        if order.status in statuses
        and (code is None or order.instrument.code == code)
        and query.covers(order.time)
    ]

    def render(order: Order) -> object:
        return order.as_history_json(with_trades=with_trades)

    return web.json_response(query.page("order_history", selected, render))


async def get_order(request: web.Request, account: Account) -> web.Response:
    order = account.order(request.match_info["order_id"])
    return web.json_response(order.as_history_json())


async def get_order_by_client_id(request: web.Request, account: Account) -> web.Response:
    order = account.order_by_client_id(request.match_info["client_id"])
    return web.json_response(order.as_history_json())


async def get_order_trades(request: web.Request, account: Account) -> web.Response:
    order = account.order(request.match_info["order_id"])
    query = HistoryQuery.parse(request.query)
    return web.json_response(query.page("trade_history", order.trades[::-1], _trade_json))


async def list_trades(request: web.Request, account: Account) -> web.Response:
    query = HistoryQuery.parse(request.query)
    code = _instrument_filter(request)
    selected = [
        trade
        for trade in reversed(account.trades.values())
        if (code is None or trade.instrument_code == code) and query.covers(trade.time)
    ]
    return web.json_response(query.page("trade_history", selected, _trade_json))


async def get_trade(request: web.Request, account: Account) -> web.Response:
    trade_id = request.match_info["trade_id"]
    if not is_uuid(trade_id):
        raise SandboxError(400, "INVALID_TRADE_ID")
    trade = account.trades.get(trade_id)
    if trade is None:
        raise SandboxError(404, "NOT_FOUND")
    return web.json_response(trade.as_json())
