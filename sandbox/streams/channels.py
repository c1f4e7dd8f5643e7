"""The channels a session may subscribe to, and the parsing of a SUBSCRIBE's ``channels``.

A channel entry is ``{"name": ..., ...}`` with the channel's own options: ``instrument_codes``
(MARKET_TICKER, ORDER_BOOK, PRICE_TICKS), ``depth`` (ORDER_BOOK), ``price_points_mode``
(MARKET_TICKER), ``properties`` of ``{instrument_code, time_granularity: {unit, period}}``
(CANDLESTICKS). The private channels take no options.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SandboxError
from ..market import INSTRUMENTS, Instrument, instrument
from ..marketdata import PERIODS, UNIT_SECONDS
from .messages import StreamError

__all__ = [
    "CHANNELS",
    "FULL_DEPTH",
    "PERMISSIONS",
    "PUBLIC_CHANNELS",
    "Granularity",
    "Subscription",
    "parse_channel_names",
    "parse_channels",
]

PUBLIC_CHANNELS = frozenset({"MARKET_TICKER", "ORDER_BOOK", "PRICE_TICKS", "CANDLESTICKS"})
# The permission each private channel needs, as the exchange's API key scopes say.
PERMISSIONS = {"ACCOUNT_HISTORY": "read", "TRADING": "read", "ORDERS": "trade"}
CHANNELS = PUBLIC_CHANNELS | PERMISSIONS.keys()
FULL_DEPTH = 50  # what depth 0 ("the whole book") means in the sandbox
_MAX_DEPTH = 500
_PRICE_POINTS_MODES = frozenset({"INLINE", "SPLIT", "OMIT"})


@dataclass(frozen=True, slots=True)
class Granularity:
    unit: str
    period: int

    @property
    def seconds(self) -> int:
        return UNIT_SECONDS[self.unit] * self.period

    def as_json(self) -> dict[str, object]:
        return {"unit": self.unit, "period": self.period}


@dataclass(frozen=True, slots=True)
class Subscription:
    """One channel of a session, with its options."""

    name: str
    instruments: tuple[Instrument, ...] = ()
    depth: int = 0
    price_points_mode: str | None = None
    candles: tuple[tuple[Instrument, Granularity], ...] = ()

    @property
    def is_private(self) -> bool:
        return self.name in PERMISSIONS

    def as_json(self) -> dict[str, object]:
        """The channel as SUBSCRIPTIONS lists it."""
        body: dict[str, object] = {"name": self.name}
        if self.name == "CANDLESTICKS":
            body["properties"] = [
                {"instrument_code": item.code, "time_granularity": granularity.as_json()}
                for item, granularity in self.candles
            ]
        elif self.name in PUBLIC_CHANNELS:
            body["instrument_codes"] = [item.code for item in self.instruments]
        if self.name == "ORDER_BOOK":
            body["depth"] = self.depth
        if self.price_points_mode is not None:
            body["price_points_mode"] = self.price_points_mode
        return body


def _instrument(code: object) -> Instrument:
    try:
        return instrument(code)
    except SandboxError as exc:  # MISSING_INSTRUMENT_CODE / INVALID_INSTRUMENT_CODE
        raise StreamError(exc.code, f"unknown instrument {code!r}") from None


def _instruments(entry: dict[str, object], name: str) -> tuple[Instrument, ...]:
    codes = entry.get("instrument_codes")
    if not isinstance(codes, list) or not codes:
        raise StreamError("INVALID_SUBSCRIPTION", f"{name} needs a list of instrument_codes")
    if len(codes) > len(INSTRUMENTS):
        raise StreamError("INVALID_SUBSCRIPTION", f"{name}: too many instrument_codes")
    # dict.fromkeys drops repeats and keeps the client's order.
    return tuple(dict.fromkeys(_instrument(code) for code in codes))


def _depth(entry: dict[str, object]) -> int:
    depth = entry.get("depth", 0)
    # bool is an int subclass; `true` is not a depth.
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= _MAX_DEPTH:
        raise StreamError("INVALID_ORDER_BOOK_DEPTH", f"depth must be 0 to {_MAX_DEPTH}")
    return depth


def _granularity(raw: object) -> Granularity:
    if not isinstance(raw, dict):
        raise StreamError("INVALID_CANDLESTICKS_GRANULARITY", "time_granularity: {unit, period}")
    unit, period = raw.get("unit"), raw.get("period")
    if (
        not isinstance(unit, str)
        or unit not in PERIODS
        or isinstance(period, bool)
        or not isinstance(period, int)
        or period not in PERIODS[unit]
    ):
        raise StreamError("INVALID_CANDLESTICKS_GRANULARITY", f"no candles of {raw!r}")
    return Granularity(unit, period)


def _candles(entry: dict[str, object]) -> tuple[tuple[Instrument, Granularity], ...]:
    properties = entry.get("properties")
    if not isinstance(properties, list) or not properties:
        raise StreamError("INVALID_SUBSCRIPTION", "CANDLESTICKS needs a list of properties")
    if len(properties) > len(INSTRUMENTS) * sum(map(len, PERIODS.values())):
        raise StreamError("INVALID_SUBSCRIPTION", "CANDLESTICKS: too many properties")
    found: dict[tuple[Instrument, Granularity], None] = {}
    for prop in properties:
        if not isinstance(prop, dict):
            raise StreamError("INVALID_SUBSCRIPTION", "a CANDLESTICKS property is an object")
        found[
            (_instrument(prop.get("instrument_code")), _granularity(prop.get("time_granularity")))
        ] = None
    return tuple(found)


def _channel(entry: object) -> Subscription:
    if not isinstance(entry, dict):
        raise StreamError("INVALID_SUBSCRIPTION", "each channel is an object with a name")
    name = entry.get("name")
    if not isinstance(name, str) or name not in CHANNELS:
        raise StreamError("INVALID_SUBSCRIPTION", f"unknown channel {name!r}")
    if name == "CANDLESTICKS":
        return Subscription(name, candles=_candles(entry))
    if name not in PUBLIC_CHANNELS:
        return Subscription(name)
    instruments = _instruments(entry, name)
    if name == "ORDER_BOOK":
        return Subscription(name, instruments, depth=_depth(entry))
    mode = entry.get("price_points_mode")
    if name == "MARKET_TICKER" and mode is not None:
        if not isinstance(mode, str) or mode not in _PRICE_POINTS_MODES:
            raise StreamError("INVALID_SUBSCRIPTION", f"unknown price_points_mode {mode!r}")
        return Subscription(name, instruments, price_points_mode=mode)
    return Subscription(name, instruments)


def parse_channels(raw: object) -> list[Subscription]:
    """The ``channels`` of a SUBSCRIBE or UPDATE_SUBSCRIPTION: all valid, or StreamError."""
    if not isinstance(raw, list) or not raw:
        raise StreamError("INVALID_SUBSCRIPTION", "channels must be a non-empty list")
    parsed = [_channel(entry) for entry in raw]
    names = [sub.name for sub in parsed]
    if len(set(names)) != len(names):
        raise StreamError("INVALID_SUBSCRIPTION", "a channel is named twice")
    return parsed


def parse_channel_names(raw: object) -> list[str]:
    """The ``channels`` of an UNSUBSCRIBE: names (or ``{"name": ...}`` objects)."""
    if not isinstance(raw, list) or not raw:
        raise StreamError("INVALID_SUBSCRIPTION", "channels must be a non-empty list")
    names: list[str] = []
    for entry in raw:
        name = entry.get("name") if isinstance(entry, dict) else entry
        if not isinstance(name, str) or name not in CHANNELS:
            raise StreamError("INVALID_SUBSCRIPTION", f"unknown channel {name!r}")
        names.append(name)
    return list(dict.fromkeys(names))
