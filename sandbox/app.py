"""The sandbox exchange: a fake upstream with the exchange's real paths and JSON bodies.

It is a test double, not a gateway: it checks no keys, and acts for whatever account the
``X-Gateway-Account-Id`` header names, over REST under ``/public/v1`` and on the WebSocket
streams at ``/streams``. Its ``/__sandbox/`` paths exist for tests only.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from . import account, funding, orders, probes, public, trading
from .accounts import AccountHandler, with_account
from .appkeys import EXCHANGE_KEY, RECORDER_KEY, STREAM_HUB_KEY
from .errors import render_errors
from .ledger import Exchange
from .recording import Recorder, record_requests
from .streams.handler import STREAM_PATH, stream_handler
from .streams.hub import StreamHub

__all__ = ["API_PREFIX", "DEFAULT_STREAM_HEARTBEAT", "DEFAULT_STREAM_TICK", "build_sandbox_app"]

DEFAULT_STREAM_TICK = 1.0  # seconds between market data updates on the streams
DEFAULT_STREAM_HEARTBEAT = 10.0  # seconds between HEARTBEAT messages

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
    ("GET", "streams", probes.streams),
    ("POST", "streams/drop", probes.drop_streams),
)


def _seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


async def _run_streams(app: web.Application) -> AsyncIterator[None]:
    hub = app[STREAM_HUB_KEY]
    hub.start()
    yield
    await hub.stop()


async def _close_streams(app: web.Application) -> None:
    await app[STREAM_HUB_KEY].shutdown()


def build_sandbox_app(
    *,
    stream_tick: float = DEFAULT_STREAM_TICK,
    stream_heartbeat: float = DEFAULT_STREAM_HEARTBEAT,
) -> web.Application:
    """A fresh sandbox exchange with empty state.

    The streams send market data every `stream_tick` seconds and a heartbeat every
    `stream_heartbeat` seconds; tests shorten both. ValueError names a bad one.
    """
    tick = _seconds("stream_tick", stream_tick)
    beat = _seconds("stream_heartbeat", stream_heartbeat)
    recorder = Recorder()
    app = web.Application(middlewares=[render_errors, record_requests(recorder)])
    exchange = Exchange()
    app[EXCHANGE_KEY] = exchange
    app[RECORDER_KEY] = recorder
    app[STREAM_HUB_KEY] = StreamHub(exchange, interval=tick, heartbeat=beat)
    app.cleanup_ctx.append(_run_streams)
    app.on_shutdown.append(_close_streams)
    app.router.add_get(STREAM_PATH, stream_handler)
    for method, path, handler in _PUBLIC:
        app.router.add_route(method, API_PREFIX + path, handler)
    for method, path, account_handler in _ACCOUNT:
        app.router.add_route(method, API_PREFIX + path, with_account(account_handler))
    for method, name, handler in _PROBES:
        app.router.add_route(method, "/__sandbox/" + name, handler)
    return app
