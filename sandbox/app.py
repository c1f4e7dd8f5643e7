"""The sandbox exchange: a fake upstream with the exchange's real paths and JSON bodies.

It is a test double, not a gateway: it checks no keys, and acts for whatever account the
``X-Gateway-Account-Id`` header names. Its ``/__sandbox/`` paths exist for tests only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from . import account, funding, orders, probes, public, trading
from .accounts import AccountHandler, with_account
from .appkeys import EXCHANGE_KEY, RECORDER_KEY
from .errors import render_errors
from .ledger import Exchange
from .recording import Recorder, record_requests

__all__ = ["API_PREFIX", "build_sandbox_app"]

API_PREFIX = "/public/v1"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PUBLIC: tuple[tuple[str, str, _Handler], ...] = (
    ("GET", "/time", public.get_time),
    ("GET", "/currencies", public.get_currencies),
    ("GET", "/instruments", public.get_instruments),
    ("GET", "/fees", public.get_fee_groups),
    ("GET", "/order-book/{instrument_code}", public.get_order_book),
    ("GET", "/candlesticks/{instrument_code}", public.get_candlesticks),
    ("GET", "/market-ticker", public.get_market_tickers),
    ("GET", "/market-ticker/{instrument_code}", public.get_market_ticker),
    ("GET", "/price-ticks/{instrument_code}", public.get_price_ticks),
)

# aiohttp tries routes in this order, so literal paths come before the parameterised
# paths they overlap (e.g. .../orders/client/{client_id} before .../orders/{order_id}/trades).
_ACCOUNT: tuple[tuple[str, str, AccountHandler], ...] = (
    ("GET", "/account/balances", account.get_balances),
    ("GET", "/account/fees", account.get_fees),
    ("POST", "/account/fees", account.update_fees),
    ("GET", "/account/trading-volume", account.get_trading_volume),
    ("GET", "/account/orders", orders.list_orders),
    ("POST", "/account/orders", trading.create_order),
    ("DELETE", "/account/orders", trading.cancel_orders),
    ("POST", "/account/orders/cancel-all-after", trading.arm_cancel_all_after),
    ("DELETE", "/account/orders/cancel-all-after", trading.disarm_cancel_all_after),
    ("GET", "/account/orders/client/{client_id}", orders.get_order_by_client_id),
    ("PUT", "/account/orders/client/{client_id}", trading.amend_order_by_client_id),
    ("DELETE", "/account/orders/client/{client_id}", trading.cancel_order_by_client_id),
    ("GET", "/account/orders/{order_id}", orders.get_order),
    ("PUT", "/account/orders/{order_id}", trading.amend_order),
    ("DELETE", "/account/orders/{order_id}", trading.cancel_order),
    ("GET", "/account/orders/{order_id}/trades", orders.get_order_trades),
    ("GET", "/account/trades", orders.list_trades),
    ("GET", "/account/trades/{trade_id}", orders.get_trade),
    ("GET", "/account/deposits", funding.list_deposits),
    ("GET", "/account/deposits/bitpanda", funding.list_internal_deposits),
    ("GET", "/account/withdrawals", funding.list_withdrawals),
    ("GET", "/account/withdrawals/bitpanda", funding.list_internal_withdrawals),
    ("GET", "/account/deposit/crypto/{currency_code}", funding.get_deposit_address),
    ("POST", "/account/deposit/crypto", funding.create_deposit_address),
    ("GET", "/account/deposit/fiat/EUR", funding.get_fiat_deposit_details),
    ("POST", "/account/withdraw/crypto", funding.withdraw_crypto),
    ("POST", "/account/withdraw/fiat", funding.withdraw_fiat),
)

_PROBES: tuple[tuple[str, str, _Handler], ...] = (
    ("GET", "last-request", probes.last_request),
    ("POST", "echo", probes.echo),
    ("PUT", "echo", probes.echo),
    ("GET", "big", probes.big),
    ("*", "slow", probes.slow),
    ("*", "status/{code}", probes.status),
    ("POST", "reset", probes.reset),
)


def build_sandbox_app() -> web.Application:
    """A fresh sandbox exchange with empty state."""
    recorder = Recorder()
    app = web.Application(middlewares=[render_errors, record_requests(recorder)])
    app[EXCHANGE_KEY] = Exchange()
    app[RECORDER_KEY] = recorder
    for method, path, handler in _PUBLIC:
        app.router.add_route(method, API_PREFIX + path, handler)
    for method, path, account_handler in _ACCOUNT:
        app.router.add_route(method, API_PREFIX + path, with_account(account_handler))
    for method, name, handler in _PROBES:
        app.router.add_route(method, "/__sandbox/" + name, handler)
    return app
