"""Order placement and cancellation: the endpoints that need the ``trade`` permission."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from aiohttp import web

from .amounts import decimals_of, parse_decimal
from .clock import now
from .errors import SandboxError
from .ledger import Account, is_uuid
from .market import Instrument, instrument
from .recording import json_body
from .records import Order, OrderRequest

__all__ = [
    "amend_order",
    "amend_order_by_client_id",
    "arm_cancel_all_after",
    "cancel_order",
    "cancel_order_by_client_id",
    "cancel_orders",
    "create_order",
    "disarm_cancel_all_after",
    "parse_order_request",
]

_TYPES = frozenset({"LIMIT", "MARKET", "STOP"})
_SIDES = frozenset({"BUY", "SELL"})
_TIMES_IN_FORCE = frozenset(
    {"GOOD_TILL_CANCELLED", "GOOD_TILL_TIME", "IMMEDIATE_OR_CANCELLED", "FILL_OR_KILL"}
)
_MAX_CANCEL_AFTER_MS = 24 * 3600 * 1000


def _choice(
    body: dict[str, object], name: str, allowed: frozenset[str], missing: str, invalid: str
) -> str:
    value = body.get(name)
    if value is None:
        raise SandboxError(400, missing)
    if not isinstance(value, str) or value not in allowed:
        raise SandboxError(400, invalid)
    return value


def _amount(raw: object, item: Instrument) -> Decimal:
    amount = parse_decimal(raw, "INVALID_AMOUNT", "NEGATIVE_AMOUNT")
    if decimals_of(amount) > item.amount_precision:
        raise SandboxError(400, "BAD_AMOUNT_PRECISION")
    return amount


def _price(
    body: dict[str, object], name: str, item: Instrument, missing: str, precision: str
) -> Decimal:
    if body.get(name) is None:
        raise SandboxError(400, missing)
    price = parse_decimal(body[name], "INVALID_PRICE", "NEGATIVE_PRICE")
    if decimals_of(price) > item.market_precision:
        raise SandboxError(400, precision)
    return price


def parse_order_request(body: dict[str, object]) -> OrderRequest:
    """Validate a new order the way the exchange does, naming the first problem found."""
    item = instrument(body.get("instrument_code"))
    order_type = _choice(body, "type", _TYPES, "MISSING_ORDER_TYPE", "INVALID_ORDER_TYPE")
    side = _choice(body, "side", _SIDES, "MISSING_SIDE", "INVALID_SIDE")
    amount = _amount(body.get("amount"), item)
    price = trigger = None
    time_in_force = None
    if order_type != "MARKET":
        price = _price(body, "price", item, "MISSING_PRICE", "BAD_PRICE_PRECISION")
        chosen = body.get("time_in_force", "GOOD_TILL_CANCELLED")
        if not isinstance(chosen, str) or chosen not in _TIMES_IN_FORCE:
            raise SandboxError(400, "INVALID_TIME_IN_FORCE")
        time_in_force = chosen
    if order_type == "STOP":
        trigger = _price(
            body, "trigger_price", item, "MISSING_TRIGGER_PRICE", "BAD_TRIGGER_PRICE_PRECISION"
        )
    client_id = body.get("client_id")
    if client_id is not None and not (isinstance(client_id, str) and is_uuid(client_id)):
        raise SandboxError(400, "INVALID_CLIENT_UUID")
    is_post_only = body.get("is_post_only", False)
    if not isinstance(is_post_only, bool):
        raise SandboxError(400, "INVALID_QUERY")
    return OrderRequest(
        instrument=item,
        side=side,
        type=order_type,
        amount=amount,
        price=price,
        trigger_price=trigger,
        client_id=client_id,
        time_in_force=time_in_force,
        is_post_only=is_post_only,
    )


async def create_order(request: web.Request, account: Account) -> web.Response:
    order = account.place(parse_order_request(json_body(request)), now())
    return web.json_response(order.as_json(), status=201)


async def cancel_orders(request: web.Request, account: Account) -> web.Response:
    """Cancel all open orders, or those of one instrument, or those listed in ``ids``."""
    code = request.query.get("instrument_code")
    ids = None
    if "ids" in request.query:
        ids = frozenset(part.strip() for part in request.query["ids"].split(",") if part.strip())
        if not all(is_uuid(order_id) for order_id in ids):
            raise SandboxError(400, "INVALID_ORDER_ID")
    instrument_code = None if code is None else instrument(code).code
    return web.json_response(account.cancel_all(now(), instrument_code, ids))


async def _cancel(account: Account, order: Order) -> web.Response:
    account.cancel(order, now())
    return web.Response(status=204)


async def cancel_order(request: web.Request, account: Account) -> web.Response:
    return await _cancel(account, account.order(request.match_info["order_id"]))


async def cancel_order_by_client_id(request: web.Request, account: Account) -> web.Response:
    return await _cancel(account, account.order_by_client_id(request.match_info["client_id"]))


async def _amend(request: web.Request, account: Account, order: Order) -> web.Response:
    amount = _amount(json_body(request).get("amount"), order.instrument)
    account.amend(order, amount, now())
    return web.json_response(order.as_json())


async def amend_order(request: web.Request, account: Account) -> web.Response:
    return await _amend(request, account, account.order(request.match_info["order_id"]))


async def amend_order_by_client_id(request: web.Request, account: Account) -> web.Response:
    order = account.order_by_client_id(request.match_info["client_id"])
    return await _amend(request, account, order)


async def arm_cancel_all_after(request: web.Request, account: Account) -> web.Response:
    """Arm (or, with timeout 0, disarm) the switch that cancels every open order."""
    timeout = json_body(request).get("timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise SandboxError(400, "INVALID_QUERY")
    if not 0 <= timeout <= _MAX_CANCEL_AFTER_MS:
        raise SandboxError(400, "INVALID_QUERY")
    account.arm_cancel_all(timedelta(milliseconds=timeout) if timeout else None, now())
    return web.json_response({"timeout": timeout})


async def disarm_cancel_all_after(request: web.Request, account: Account) -> web.Response:
    account.arm_cancel_all(None, now())
    return web.Response(status=204)
