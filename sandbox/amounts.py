"""Decimal amounts: parsed from and written as the exchange's decimal strings."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from .errors import SandboxError

__all__ = ["ZERO", "decimals_of", "fmt", "parse_decimal"]

ZERO = Decimal(0)


def fmt(value: Decimal) -> str:
    """Write like the exchange: plain notation, at least one decimal ("10.0", "0.00015")."""
    text = format(value.normalize(), "f")
    return text if "." in text else text + ".0"


def decimals_of(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def parse_decimal(raw: object, invalid: str, negative: str | None = None) -> Decimal:
    """A positive finite decimal from a JSON string or number, else the given error code."""
    # bool is an int subclass; `true` is not an amount.
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise SandboxError(400, invalid)
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise SandboxError(400, invalid) from None
    if not value.is_finite():
        raise SandboxError(400, invalid)
    if value < 0:
        raise SandboxError(400, negative or invalid)
    if value == 0:
        raise SandboxError(400, invalid)
    return value
