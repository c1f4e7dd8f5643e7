"""Public market data: time, currencies, instruments, books, candles, tickers, fee groups.

Everything is derived from the fixed prices in `market` by `marketdata`, so the same request
always gets the same numbers (apart from timestamps).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from .clock import epoch_millis, iso, now, parse_iso
from .errors import SandboxError
from .market import CURRENCIES, FEE_TIERS, INSTRUMENTS, instrument
from .marketdata import PERIODS, UNIT_SECONDS, book_side, candle, price_tick, ticker

__all__ = [
    "get_candlesticks",
    "get_currencies",
    "get_fee_groups",
    "get_instruments",
    "get_market_ticker",
    "get_market_tickers",
    "get_order_book",
    "get_price_ticks",
    "get_time",
]

_DEFAULT_DEPTH = 20
_MAX_DEPTH = 500
_MAX_CANDLES = 5000
_TICK_SPACING = timedelta(minutes=10)
_TICKS_WINDOW = timedelta(hours=4)


async def get_time(request: web.Request) -> web.Response:
    moment = now()
    return web.json_response({"iso": iso(moment), "epoch_millis": epoch_millis(moment)})


async def get_currencies(request: web.Request) -> web.Response:
    return web.json_response([item.as_json() for item in CURRENCIES.values()])


async def get_instruments(request: web.Request) -> web.Response:
    return web.json_response([item.as_json() for item in INSTRUMENTS.values()])


async def get_fee_groups(request: web.Request) -> web.Response:
    return web.json_response(
        [
            {
                "fee_group_id": "default",
                "display_text": "The standard fee plan.",
                "fee_tiers": list(FEE_TIERS),
                "fee_discount_rate": "25.0",
                "minimum_price_value": "0.12",
            }
        ]
    )


async def get_market_tickers(request: web.Request) -> web.Response:
    moment = now()
    return web.json_response([ticker(item, moment) for item in INSTRUMENTS.values()])


async def get_market_ticker(request: web.Request) -> web.Response:
    item = instrument(request.match_info["instrument_code"])
    return web.json_response(ticker(item, now()))


def _int_param(request: web.Request, name: str, default: int, error: str) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SandboxError(400, error) from None


async def get_order_book(request: web.Request) -> web.Response:
    item = instrument(request.match_info["instrument_code"])
    level = _int_param(request, "level", 3, "INVALID_ORDER_BOOK_LEVEL")
    if level not in (1, 2, 3):
        raise SandboxError(400, "INVALID_ORDER_BOOK_LEVEL")
    depth = _int_param(request, "depth", _DEFAULT_DEPTH, "INVALID_ORDER_BOOK_DEPTH")
    if not 0 < depth <= _MAX_DEPTH:
        raise SandboxError(400, "INVALID_ORDER_BOOK_DEPTH")
    depth = 1 if level == 1 else depth  # level 1 is the best bid and ask only
    return web.json_response(
        {
            "instrument_code": item.code,
            "time": iso(now()),
            "bids": book_side(item, "bids", depth, level),
            "asks": book_side(item, "asks", depth, level),
        }
    )


def _time_param(request: web.Request, name: str, missing: str) -> datetime:
    raw = request.query.get(name)
    if raw is None:
        raise SandboxError(400, missing)
    parsed = parse_iso(raw)
    if parsed is None:
        raise SandboxError(400, "INVALID_TIME")
    return parsed


async def get_candlesticks(request: web.Request) -> web.Response:
    item = instrument(request.match_info["instrument_code"])
    unit = request.query.get("unit")
    if unit is None:
        raise SandboxError(400, "MISSING_CANDLESTICKS_UNIT_PARAM")
    if unit not in UNIT_SECONDS:
        raise SandboxError(400, "INVALID_CANDLESTICKS_UNIT")
    if "period" not in request.query:
        raise SandboxError(400, "MISSING_CANDLESTICKS_PERIOD_PARAM")
    period = _int_param(request, "period", 1, "INVALID_PERIOD")
    if period not in PERIODS[unit]:
        raise SandboxError(400, "INVALID_CANDLESTICKS_GRANULARITY")
    start = _time_param(request, "from", "MISSING_FROM_PARAM")
    end = _time_param(request, "to", "MISSING_TO_PARAM")
    if start > end:
        raise SandboxError(400, "INVALID_TIME_RANGE")
    seconds = UNIT_SECONDS[unit] * period
    first = -(-int(start.timestamp()) // seconds)
    last = int(end.timestamp()) // seconds
    if last - first > _MAX_CANDLES:
        raise SandboxError(400, "CANDLESTICKS_TIME_RANGE_TOO_BIG")
    # Completed candles only: those that start at or after `from` and end by `to`.
    candles = [candle(item, unit, period, bucket, seconds) for bucket in range(first, last)]
    return web.json_response(candles)


async def get_price_ticks(request: web.Request) -> web.Response:
    item = instrument(request.match_info["instrument_code"])
    end = parse_iso(request.query["to"]) if "to" in request.query else now()
    start = parse_iso(request.query["from"]) if "from" in request.query else None
    if end is None or ("from" in request.query and start is None):
        raise SandboxError(400, "INVALID_TIME")
    start = start or end - _TICKS_WINDOW
    if start > end or end - start > _TICKS_WINDOW:
        raise SandboxError(400, "INVALID_TIME_RANGE")
    spacing = int(_TICK_SPACING.total_seconds())
    ticks: list[dict[str, object]] = []
    # Latest first, as the exchange sorts them.
    for slot in range(
        int(end.timestamp()) // spacing, -(-int(start.timestamp()) // spacing) - 1, -1
    ):
        moment = datetime.fromtimestamp(slot * spacing, UTC)
        ticks.append(price_tick(item, slot, moment))
    return web.json_response(ticks)
