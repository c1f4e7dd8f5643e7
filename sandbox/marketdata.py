"""Deterministic market data derived from the fixed prices: shared by REST and the streams.

Every number is a pure function of the instrument and a slot (a time bucket, or a stream tick),
so tests can predict what they will read.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from .amounts import fmt
from .clock import epoch_millis, iso
from .market import Instrument

__all__ = [
    "PERIODS",
    "UNIT_SECONDS",
    "book_levels",
    "book_side",
    "candle",
    "noise",
    "price_tick",
    "tick_price",
    "ticker",
]

_BOOK_NAMESPACE = uuid.UUID("6f1c2a0e-5b7d-4c1e-9a51-0c4d5e6f7a8b")
# Candle granularities: seconds per unit, and the periods the exchange offers in each unit.
# Months are irregular; a fixed 30 days keeps buckets simple and deterministic.
UNIT_SECONDS = {"MINUTES": 60, "HOURS": 3600, "DAYS": 86400, "WEEKS": 604800, "MONTHS": 2592000}
PERIODS = {"MINUTES": {1, 5, 15, 30}, "HOURS": {1, 4}, "DAYS": {1}, "WEEKS": {1}, "MONTHS": {1}}


def noise(*parts: object) -> Decimal:
    """A stable pseudo-random number in [0, 1) for the given inputs."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return Decimal(int.from_bytes(digest[:4], "big")) / Decimal(2**32)


def tick_price(item: Instrument, slot: int) -> Decimal:
    """The price of trade `slot`: within 0.1 % of the fixed price either way."""
    return item.to_price(item.price * (1 + (noise(item.code, slot, "tick") - Decimal("0.5")) / 500))


def ticker(item: Instrument, moment: datetime) -> dict[str, object]:
    """The REST market ticker of `item`."""
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


def book_levels(item: Instrument, side: str, depth: int) -> list[tuple[Decimal, Decimal]]:
    """(price, amount) of the best `depth` levels of one side ("bids" or "asks"), best first."""
    sign = 1 if side == "asks" else -1
    return [
        (
            item.price + sign * item.spread_step * (index + 1),
            item.to_amount(Decimal(1000) / item.price * (index % 5 + 1)),
        )
        for index in range(depth)
    ]


def book_side(item: Instrument, side: str, depth: int, level: int) -> list[dict[str, object]]:
    """One side of the REST order book at `level` 1, 2 (order counts) or 3 (order ids)."""
    entries: list[dict[str, object]] = []
    for index, (price, amount) in enumerate(book_levels(item, side, depth)):
        entry: dict[str, object] = {"price": fmt(price), "amount": fmt(amount)}
        if level == 3:
            entry["order_id"] = str(uuid.uuid5(_BOOK_NAMESPACE, f"{item.code}:{side}:{index}"))
        else:
            entry["number_of_orders"] = index % 3 + 1
        entries.append(entry)
    return entries


def candle(
    item: Instrument, unit: str, period: int, bucket: int, seconds: int
) -> dict[str, object]:
    """The candle of time bucket `bucket` (each `seconds` long) at granularity unit/period."""

    def price(*salt: object) -> Decimal:
        wobble = noise(item.code, unit, period, bucket, *salt) - Decimal("0.5")
        return item.price * (1 + wobble / 50)

    open_, close = price("open"), price("close")
    high = max(open_, close) * (1 + noise(item.code, bucket, "high") / 200)
    low = min(open_, close) * (1 - noise(item.code, bucket, "low") / 200)
    amount = item.to_amount((1 + noise(item.code, bucket, "amount") * 9) * 1000 / item.price)
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


def price_tick(item: Instrument, slot: int, moment: datetime) -> dict[str, object]:
    """Trade number `slot` of `item`, as the exchange reports a price tick."""
    price = tick_price(item, slot)
    amount = item.to_amount((1 + noise(item.code, slot, "qty") * 4) * 100 / item.price)
    return {
        "instrument_code": item.code,
        "price": fmt(price),
        "amount": fmt(amount),
        "taker_side": "BUY" if noise(item.code, slot, "side") < Decimal("0.5") else "SELL",
        "volume": fmt(item.quote.quantize(price * amount)),
        "time": iso(moment),
        "trade_timestamp": epoch_millis(moment),
        "sequence": slot,
    }
