"""Parsing a SUBSCRIBE's channels: the exchange's options, and the exact error for each bad one."""

from __future__ import annotations

import pytest

from sandbox.streams.channels import (
    FULL_DEPTH,
    Granularity,
    parse_channel_names,
    parse_channels,
)
from sandbox.streams.market_feed import BookPart, CandlePart, TickerPart, parts_of
from sandbox.streams.messages import StreamError


def candles(granularity: object) -> dict[str, object]:
    prop = {"instrument_code": "BTC_EUR", "time_granularity": granularity}
    return {"name": "CANDLESTICKS", "properties": [prop]}


def test_channels_parse_and_echo_as_the_exchange_lists_them() -> None:
    sent = [
        {"name": "ORDER_BOOK", "instrument_codes": ["BTC_EUR", "BTC_EUR", "ETH_EUR"], "depth": 0},
        {"name": "MARKET_TICKER", "instrument_codes": ["ETH_BTC"], "price_points_mode": "INLINE"},
        {"name": "PRICE_TICKS", "instrument_codes": ["USDT_EUR"]},
        {"name": "CANDLESTICKS", "properties": [
            {"instrument_code": "BTC_EUR", "time_granularity": {"unit": "HOURS", "period": 4}}]},
        {"name": "ACCOUNT_HISTORY"},
        {"name": "TRADING"},
        {"name": "ORDERS"},
    ]
    parsed = parse_channels(sent)
    echoed = [sub.as_json() for sub in parsed]
    assert echoed[0] == {"name": "ORDER_BOOK", "instrument_codes": ["BTC_EUR", "ETH_EUR"],
                         "depth": 0}  # repeats dropped, order kept
    assert echoed[1:] == sent[1:]
    assert [sub.is_private for sub in parsed] == [False] * 4 + [True] * 3


def test_parts_are_what_each_tick_renders() -> None:
    book, ticker, _, candles, history, *_ = parse_channels([
        {"name": "ORDER_BOOK", "instrument_codes": ["BTC_EUR", "ETH_EUR"]},
        {"name": "MARKET_TICKER", "instrument_codes": ["BTC_EUR", "ETH_EUR"]},
        {"name": "PRICE_TICKS", "instrument_codes": ["BTC_EUR"]},
        {"name": "CANDLESTICKS", "properties": [
            {"instrument_code": "ETH_EUR", "time_granularity": {"unit": "DAYS", "period": 1}}]},
        {"name": "ACCOUNT_HISTORY"},
    ])
    assert parts_of(book) == (BookPart("BTC_EUR", FULL_DEPTH), BookPart("ETH_EUR", FULL_DEPTH))
    assert parts_of(ticker) == (TickerPart(("BTC_EUR", "ETH_EUR")),)  # one message for all
    assert parts_of(candles) == (CandlePart("ETH_EUR", Granularity("DAYS", 1)),)
    assert parts_of(history) == ()  # private channels do not tick


@pytest.mark.parametrize(("channels", "code"), [
    (None, "INVALID_SUBSCRIPTION"),
    ([], "INVALID_SUBSCRIPTION"),
    ("ORDER_BOOK", "INVALID_SUBSCRIPTION"),
    (["ORDER_BOOK"], "INVALID_SUBSCRIPTION"),
    ([{"name": "order_book", "instrument_codes": ["BTC_EUR"]}], "INVALID_SUBSCRIPTION"),
    ([{"name": "ORDERS"}, {"name": "ORDERS"}], "INVALID_SUBSCRIPTION"),
    ([{"name": "PRICE_TICKS", "instrument_codes": []}], "INVALID_SUBSCRIPTION"),
    ([{"name": "PRICE_TICKS", "instrument_codes": "BTC_EUR"}], "INVALID_SUBSCRIPTION"),
    ([{"name": "PRICE_TICKS", "instrument_codes": ["BTC_EUR"] * 7}], "INVALID_SUBSCRIPTION"),
    ([{"name": "PRICE_TICKS", "instrument_codes": ["DOGE_EUR"]}], "INVALID_INSTRUMENT_CODE"),
    ([{"name": "PRICE_TICKS", "instrument_codes": [""]}], "MISSING_INSTRUMENT_CODE"),
    ([{"name": "PRICE_TICKS", "instrument_codes": [{"x": 1}]}], "INVALID_INSTRUMENT_CODE"),
    ([{"name": "ORDER_BOOK", "instrument_codes": ["BTC_EUR"], "depth": 501}],
     "INVALID_ORDER_BOOK_DEPTH"),
    ([{"name": "ORDER_BOOK", "instrument_codes": ["BTC_EUR"], "depth": True}],
     "INVALID_ORDER_BOOK_DEPTH"),
    ([{"name": "ORDER_BOOK", "instrument_codes": ["BTC_EUR"], "depth": "10"}],
     "INVALID_ORDER_BOOK_DEPTH"),
    ([{"name": "MARKET_TICKER", "instrument_codes": ["BTC_EUR"], "price_points_mode": "ALL"}],
     "INVALID_SUBSCRIPTION"),
    ([{"name": "CANDLESTICKS"}], "INVALID_SUBSCRIPTION"),
    ([{"name": "CANDLESTICKS", "properties": ["BTC_EUR"]}], "INVALID_SUBSCRIPTION"),
    ([{"name": "CANDLESTICKS", "properties": [{"instrument_code": "BTC_EUR"}]}],
     "INVALID_CANDLESTICKS_GRANULARITY"),
    ([candles({"unit": "YEARS", "period": 1})], "INVALID_CANDLESTICKS_GRANULARITY"),
    ([candles({"unit": "HOURS", "period": True})], "INVALID_CANDLESTICKS_GRANULARITY"),
    ([candles({"unit": "HOURS", "period": 2})], "INVALID_CANDLESTICKS_GRANULARITY"),
    ([candles("MINUTES")], "INVALID_CANDLESTICKS_GRANULARITY"),
])
def test_bad_channels_are_refused_whole(channels: object, code: str) -> None:
    with pytest.raises(StreamError) as refused:
        parse_channels(channels)
    assert refused.value.code == code
    assert refused.value.message  # says what is wrong


def test_unsubscribe_takes_names_or_channel_objects() -> None:
    assert parse_channel_names(["ORDERS", {"name": "TRADING"}, "ORDERS"]) == ["ORDERS", "TRADING"]
    for bad in (None, [], ["NOPE"], [{"nome": "ORDERS"}], [7]):
        with pytest.raises(StreamError) as refused:
            parse_channel_names(bad)
        assert refused.value.code == "INVALID_SUBSCRIPTION"
