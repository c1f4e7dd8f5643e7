"""The sandbox's fixed market: currencies, instruments and one price per instrument.

Prices never move, so a MARKET order's fill price, balances and fees are predictable in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from types import MappingProxyType

from .amounts import fmt
from .errors import SandboxError

__all__ = [
    "CURRENCIES",
    "FEE_TIERS",
    "FIAT",
    "INSTRUMENTS",
    "MAKER_FEE_PERCENT",
    "TAKER_FEE_PERCENT",
    "Currency",
    "Instrument",
    "btc_value",
    "currency",
    "instrument",
]


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    name: str
    precision: int
    withdrawal_fee: Decimal

    @property
    def unit(self) -> Decimal:
        return Decimal(1).scaleb(-self.precision)

    def quantize(self, value: Decimal) -> Decimal:
        return value.quantize(self.unit, rounding=ROUND_HALF_EVEN)

    def as_json(self) -> dict[str, object]:
        return {"code": self.code, "precision": self.precision, "name": self.name}


@dataclass(frozen=True, slots=True)
class Instrument:
    base: Currency
    quote: Currency
    amount_precision: int
    market_precision: int
    min_size: Decimal  # minimum order value, in the quote currency
    price: Decimal  # the sandbox's fixed last price

    @property
    def code(self) -> str:
        return f"{self.base.code}_{self.quote.code}"

    @property
    def tick(self) -> Decimal:
        return Decimal(1).scaleb(-self.market_precision)

    @property
    def spread_step(self) -> Decimal:
        """Distance between order-book levels: 0.05 % of the price, at least one tick."""
        return max(self.to_price(self.price * Decimal("0.0005")), self.tick)

    def to_price(self, value: Decimal) -> Decimal:
        return value.quantize(self.tick, rounding=ROUND_HALF_EVEN)

    def to_amount(self, value: Decimal) -> Decimal:
        return value.quantize(Decimal(1).scaleb(-self.amount_precision), rounding=ROUND_HALF_EVEN)

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.code,
            "base": {"code": self.base.code, "precision": self.base.precision},
            "quote": {"code": self.quote.code, "precision": self.quote.precision},
            "amount_precision": self.amount_precision,
            "market_precision": self.market_precision,
            "min_size": str(self.min_size),
            "state": "ACTIVE",
            "type": "SPOT",
        }


def _currencies(*items: Currency) -> MappingProxyType[str, Currency]:
    return MappingProxyType({item.code: item for item in items})


CURRENCIES = _currencies(
    Currency("EUR", "Euro", 2, Decimal("0")),
    Currency("CHF", "Swiss franc", 2, Decimal("0")),
    Currency("BTC", "Bitcoin", 8, Decimal("0.0001")),
    Currency("ETH", "Ethereum", 8, Decimal("0.002")),
    Currency("USDT", "Tether", 6, Decimal("5")),
    Currency("BEST", "Bitpanda Ecosystem Token", 8, Decimal("10")),
)
FIAT = frozenset({"EUR", "CHF"})

_C = CURRENCIES
INSTRUMENTS: MappingProxyType[str, Instrument] = MappingProxyType(
    {
        item.code: item
        for item in (
            Instrument(_C["BTC"], _C["EUR"], 5, 2, Decimal("10.0"), Decimal("60000.00")),
            Instrument(_C["BTC"], _C["CHF"], 5, 2, Decimal("10.0"), Decimal("58000.00")),
            Instrument(_C["ETH"], _C["EUR"], 4, 2, Decimal("10.0"), Decimal("3000.00")),
            Instrument(_C["ETH"], _C["BTC"], 4, 5, Decimal("0.0002"), Decimal("0.05000")),
            Instrument(_C["USDT"], _C["EUR"], 2, 4, Decimal("10.0"), Decimal("0.9200")),
            Instrument(_C["BEST"], _C["EUR"], 2, 4, Decimal("10.0"), Decimal("0.5000")),
        )
    }
)

# Percentages, as the exchange writes them ("0.15" means 0.15 %).
MAKER_FEE_PERCENT = Decimal("0.10")
TAKER_FEE_PERCENT = Decimal("0.15")
# Tiers by running trading volume in BTC; sandbox fills always use the first tier's taker fee.
FEE_TIERS: tuple[dict[str, str], ...] = tuple(
    {
        "volume": volume,
        "fee_group_id": "default",
        "maker_fee": fmt(MAKER_FEE_PERCENT - discount),
        "taker_fee": fmt(TAKER_FEE_PERCENT - discount),
    }
    for volume, discount in (
        ("0.0", Decimal(0)),
        ("100.0", Decimal("0.02")),
        ("1000.0", Decimal("0.05")),
        ("10000.0", Decimal("0.07")),
    )
)


def instrument(code: object) -> Instrument:
    if code is None or code == "":
        raise SandboxError(400, "MISSING_INSTRUMENT_CODE")
    found = INSTRUMENTS.get(code) if isinstance(code, str) else None
    if found is None:
        raise SandboxError(400, "INVALID_INSTRUMENT_CODE")
    return found


def currency(code: object) -> Currency:
    found = CURRENCIES.get(code) if isinstance(code, str) else None
    if found is None:
        raise SandboxError(400, "INVALID_CURRENCY")
    return found


def btc_value(amount: Decimal, code: str) -> Decimal:
    """Rough BTC worth of an amount: the exchange counts trading volume in BTC."""
    if code == "BTC":
        return amount
    direct = INSTRUMENTS.get(f"{code}_BTC")
    if direct is not None:
        return amount * direct.price
    inverse = INSTRUMENTS.get(f"BTC_{code}")
    if inverse is not None:
        return amount / inverse.price
    # Neither pair exists: go through EUR.
    return btc_value(amount * INSTRUMENTS[f"{code}_EUR"].price, "EUR")
