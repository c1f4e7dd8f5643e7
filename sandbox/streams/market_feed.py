"""The public channels' messages: a snapshot on subscribe, then an update at every tick.

Tick number ``n`` counts from the sandbox's start; each update is a pure function of the
instrument, the channel's options and ``n``, so the stream is steady and predictable. Prices
wobble within 0.1 % of the fixed price (orders still fill at the fixed price).

An update is identified by a `Part` (one instrument of a channel, with its options), so the hub
renders each part once per tick however many sessions subscribe to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from ..amounts import fmt
from ..market import INSTRUMENTS, Instrument
from ..marketdata import book_levels, candle, noise, price_tick, tick_price, ticker
from .channels import FULL_DEPTH, Granularity, Subscription
from .messages import on_channel

__all__ = [
    "HISTORY_LENGTH",
    "BookPart",
    "CandlePart",
    "Part",
    "TickPart",
    "TickerPart",
    "parts_of",
    "render_update",
    "snapshot",
]

HISTORY_LENGTH = 10  # at most this many past ticks in PRICE_TICK_HISTORY


@dataclass(frozen=True, slots=True)
class TickerPart:
    codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BookPart:
    code: str
    depth: int


@dataclass(frozen=True, slots=True)
class TickPart:
    code: str


@dataclass(frozen=True, slots=True)
class CandlePart:
    code: str
    granularity: Granularity


Part = TickerPart | BookPart | TickPart | CandlePart


def _depth(depth: int) -> int:
    return depth or FULL_DEPTH


def parts_of(sub: Subscription) -> tuple[Part, ...]:
    """The updates a public subscription receives at each tick (none for private channels)."""
    if sub.name == "MARKET_TICKER":
        return (TickerPart(tuple(item.code for item in sub.instruments)),)
    if sub.name == "ORDER_BOOK":
        return tuple(BookPart(item.code, _depth(sub.depth)) for item in sub.instruments)
    if sub.name == "PRICE_TICKS":
        return tuple(TickPart(item.code) for item in sub.instruments)
    if sub.name == "CANDLESTICKS":
        return tuple(CandlePart(item.code, granularity) for item, granularity in sub.candles)
    return ()


def _ticker_update(item: Instrument, tick: int, moment: datetime) -> dict[str, object]:
    daily = ticker(item, moment)
    last = tick_price(item, tick)
    opened = item.to_price(item.price * Decimal("0.988"))
    change = last - opened
    return {
        "instrument": item.code,
        "last_price": fmt(last),
        "price_change": fmt(change),
        "price_change_percentage": fmt((change / opened * 100).quantize(Decimal("0.01"))),
        "high": fmt(max(Decimal(str(daily["high"])), last)),
        "low": fmt(min(Decimal(str(daily["low"])), last)),
        "volume": daily["quote_volume"],
    }


def _book_amount(item: Instrument, base: Decimal, tick: int, side: str) -> Decimal:
    return item.to_amount(base * (1 + noise(item.code, tick, side, "book")))


def _live_candle(
    item: Instrument, granularity: Granularity, tick: int, moment: datetime
) -> dict[str, object]:
    seconds = granularity.seconds
    body = candle(
        item, granularity.unit, granularity.period, int(moment.timestamp()) // seconds, seconds
    )
    close = tick_price(item, tick)
    body["close"] = fmt(close)
    body["high"] = fmt(max(Decimal(str(body["high"])), close))
    body["low"] = fmt(min(Decimal(str(body["low"])), close))
    body["last_sequence"] = tick
    return body


def _price_tick(item: Instrument, tick: int, moment: datetime) -> dict[str, object]:
    body = price_tick(item, tick, moment)
    body["best_bid"] = fmt(item.price - item.spread_step)
    body["best_ask"] = fmt(item.price + item.spread_step)
    return body


def render_update(part: Part, tick: int, moment: datetime) -> dict[str, object]:
    """The message `part` sends at tick `tick`."""
    if isinstance(part, TickerPart):
        updates = [_ticker_update(INSTRUMENTS[code], tick, moment) for code in part.codes]
        return on_channel(
            {"ticker_updates": updates}, "MARKET_TICKER", "MARKET_TICKER_UPDATES", moment
        )
    if isinstance(part, BookPart):
        item = INSTRUMENTS[part.code]
        level = tick % part.depth  # one level of each side changes per tick, in turn
        (bid, bid_amount), (ask, ask_amount) = (
            book_levels(item, side, level + 1)[level] for side in ("bids", "asks")
        )
        changes = [
            ["BUY", fmt(bid), fmt(_book_amount(item, bid_amount, tick, "BUY"))],
            ["SELL", fmt(ask), fmt(_book_amount(item, ask_amount, tick, "SELL"))],
        ]
        body: dict[str, object] = {"instrument_code": item.code, "changes": changes}
        return on_channel(body, "ORDER_BOOK", "ORDER_BOOK_UPDATE", moment)
    if isinstance(part, TickPart):
        tick_body = _price_tick(INSTRUMENTS[part.code], tick, moment)
        return on_channel(tick_body, "PRICE_TICKS", "PRICE_TICK", moment)
    item = INSTRUMENTS[part.code]
    return on_channel(
        _live_candle(item, part.granularity, tick, moment), "CANDLESTICKS", "CANDLESTICK", moment
    )


def snapshot(part: Part, tick: int, moment: datetime, interval: float) -> dict[str, object]:
    """The message `part` sends on subscribe; `interval` is the seconds between ticks."""
    if isinstance(part, TickerPart):
        return render_update(part, tick, moment)  # the exchange sends the tickers at once
    if isinstance(part, BookPart):
        item = INSTRUMENTS[part.code]
        bids, asks = (
            [[fmt(price), fmt(amount)] for price, amount in book_levels(item, side, part.depth)]
            for side in ("bids", "asks")
        )
        body: dict[str, object] = {"instrument_code": item.code, "bids": bids, "asks": asks}
        return on_channel(body, "ORDER_BOOK", "ORDER_BOOK_SNAPSHOT", moment)
    if isinstance(part, TickPart):
        item = INSTRUMENTS[part.code]
        # The ticks already streamed (none before the first tick), newest first.
        history = [
            _price_tick(item, slot, moment - timedelta(seconds=(tick - slot) * interval))
            for slot in range(tick - 1, max(tick - 1 - HISTORY_LENGTH, -1), -1)
        ]
        body = {"instrument_code": item.code, "history": history}
        return on_channel(body, "PRICE_TICKS", "PRICE_TICK_HISTORY", moment)
    item = INSTRUMENTS[part.code]
    body = _live_candle(item, part.granularity, tick, moment)
    return on_channel(body, "CANDLESTICKS", "CANDLESTICK_SNAPSHOT", moment)
