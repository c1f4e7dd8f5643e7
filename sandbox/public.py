"""Public market data: time, currencies, instruments, books, candles, tickers, fee groups.

Everything is derived from the fixed prices in `market`, with deterministic noise, so the
same request always gets the same numbers (apart from timestamps).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from aiohttp import web

from .amounts import fmt
from .clock import epoch_millis, iso, now, parse_iso
from .errors import SandboxError
from .market import CURRENCIES, FEE_TIERS, INSTRUMENTS, Instrument, instrument

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

_BOOK_NAMESPACE = uuid.UUID("6f1c2a0e-5b7d-4c1e-9a51-0c4d5e6f7a8b")
_DEFAULT_DEPTH = 20
_MAX_DEPTH = 500
_MAX_CANDLES = 5000
_TICK_SPACING = timedelta(minutes=10)
_TICKS_WINDOW = timedelta(hours=4)
# Months are irregular; a fixed 30 days keeps buckets simple and deterministic.
_UNIT_SECONDS = {"MINUTES": 60, "HOURS": 3600, "DAYS": 86400, "WEEKS": 604800, "MONTHS": 2592000}
_PERIODS = {"MINUTES": {1, 5, 15, 30}, "HOURS": {1, 4}, "DAYS": {1}, "WEEKS": {1}, "MONTHS": {1}}


def _noise(*parts: object) -> Decimal:
    """A stable pseudo-random number in [0, 1) for the given inputs."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return Decimal(int.from_bytes(digest[:4], "big")) / Decimal(2**32)


def _ticker(item: Instrument, moment: datetime) -> dict[str, object]:
    step = item.spread_step
    change = item.to_price(item.price * Decimal("0.012"))
    base_volume = item.to_amount(Decimal(25000) / item.price.sqrt())
    return {
        "instrument_code": item.code,
        "sequence": epoch_millis(moment) // 1000,
        "time": iso(moment),
        "state": "ACTIVE",
        "is_frozen": 0,
        "quote_volume": fmt(item.quote.quantize(base_volume * item.price)),
        "base_volume": fmt(base_volume),
        "last_price": fmt(item.price),
        "best_bid": fmt(item.price - step),
        "best_ask": fmt(item.price + step),
        "price_change": fmt(change),
        "price_change_percentage": "1.2",
        "high": fmt(item.to_price(item.price * Decimal("1.02"))),
        "low": fmt(item.to_price(item.price * Decimal("0.98"))),
    }


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
    return web.json_response([_ticker(item, moment) for item in INSTRUMENTS.values()])


async def get_market_ticker(request: web.Request) -> web.Response:
    item = instrument(request.match_info["instrument_code"])
    return web.json_response(_ticker(item, now()))


def _int_param(request: web.Request, name: str, default: int, error: str) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SandboxError(400, error) from None


def _book_side(item: Instrument, side: str, depth: int, level: int) -> list[dict[str, object]]:
    sign = 1 if side == "asks" else -1
    entries: list[dict[str, object]] = []
    for index in range(depth):
        price = item.price + sign * item.spread_step * (index + 1)
        amount = item.to_amount(Decimal(1000) / item.price * (index % 5 + 1))
        entry: dict[str, object] = {"price": fmt(price), "amount": fmt(amount)}
        if level == 3:
            entry["order_id"] = str(uuid.uuid5(_BOOK_NAMESPACE, f"{item.code}:{side}:{index}"))
        else:
            entry["number_of_orders"] = index % 3 + 1
        entries.append(entry)
    return entries


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
            "bids": _book_side(item, "bids", depth, level),
            "asks": _book_side(item, "asks", depth, level),
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


def _candle(
    item: Instrument, unit: str, period: int, bucket: int, seconds: int
) -> dict[str, object]:
    def price(*salt: object) -> Decimal:
        return item.price * (
            1 + (_noise(item.code, unit, period, bucket, *salt) - Decimal("0.5")) / 50
        )

    open_, close = price("open"), price("close")
    high = max(open_, close) * (1 + _noise(item.code, bucket, "high") / 200)
    low = min(open_, close) * (1 - _noise(item.code, bucket, "low") / 200)
    amount = item.to_amount((1 + _noise(item.code, bucket, "amount") * 9) * 1000 / item.price)
    end = datetime.fromtimestamp((bucket + 1) * seconds, UTC) - timedelta(milliseconds=1)
    return {
        "instrument_code": item.code,
        "granularity": {"unit": unit, "period": period},
        "high": fmt(item.to_price(high)),
        "low": fmt(item.to_price(low)),
        "open": fmt(item.to_price(open_)),
        "close": fmt(item.to_price(close)),
        "total_amount": fmt(amount),
        "volume": fmt(item.quote.quantize(amount * item.price)),
        "time": iso(end),
        "last_sequence": bucket,
    }


async def get_candlesticks(request: web.Request) -> web.Response:
    item = instrument(request.match_info["instrument_code"])
    unit = request.query.get("unit")
    if unit is None:
        raise SandboxError(400, "MISSING_CANDLESTICKS_UNIT_PARAM")
    if unit not in _UNIT_SECONDS:
        raise SandboxError(400, "INVALID_CANDLESTICKS_UNIT")
    if "period" not in request.query:
        raise SandboxError(400, "MISSING_CANDLESTICKS_PERIOD_PARAM")
    period = _int_param(request, "period", 1, "INVALID_PERIOD")
    if period not in _PERIODS[unit]:
        raise SandboxError(400, "INVALID_CANDLESTICKS_GRANULARITY")
    start = _time_param(request, "from", "MISSING_FROM_PARAM")
    end = _time_param(request, "to", "MISSING_TO_PARAM")
    if start > end:
        raise SandboxError(400, "INVALID_TIME_RANGE")
    seconds = _UNIT_SECONDS[unit] * period
    first = -(-int(start.timestamp()) // seconds)
    last = int(end.timestamp()) // seconds
    if last - first > _MAX_CANDLES:
        raise SandboxError(400, "CANDLESTICKS_TIME_RANGE_TOO_BIG")
    # Completed candles only: those that start at or after `from` and end by `to`.
    candles = [_candle(item, unit, period, bucket, seconds) for bucket in range(first, last)]
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
        price = item.to_price(
            item.price * (1 + (_noise(item.code, slot, "tick") - Decimal("0.5")) / 500)
        )
        amount = item.to_amount((1 + _noise(item.code, slot, "qty") * 4) * 100 / item.price)
        ticks.append(
            {
                "instrument_code": item.code,
                "price": fmt(price),
                "amount": fmt(amount),
                "taker_side": "BUY" if _noise(item.code, slot, "side") < Decimal("0.5") else "SELL",
                "volume": fmt(item.quote.quantize(price * amount)),
                "time": iso(moment),
                "trade_timestamp": epoch_millis(moment),
                "sequence": slot,
            }
        )
    return web.json_response(ticks)
