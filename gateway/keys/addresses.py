"""Allowed withdrawal addresses of keys: parsing what was typed, reading a withdrawal body,
and whether the address a withdrawal names is allowed at a given time.

A key with addresses may withdraw only to those of them past their cooldown; a key with
none may withdraw anywhere its permissions allow. Addresses compare exactly as written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

from gateway.http.errors import WithdrawAddressNotAllowed, WithdrawBodyUnreadable
from gateway.keys.expiry import format_time
from gateway.store.base import KeyRecord

__all__ = [
    "MAX_WITHDRAW_ADDRESSES",
    "AddressError",
    "parse_addresses",
    "refusal_for_address",
    "split_addresses",
    "withdrawal_address_of",
]

MAX_WITHDRAW_ADDRESSES = 20
# Letters, digits and the separators real address formats use (`bitcoincash:q...`).
_ADDRESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class AddressError(ValueError):
    """A bad address list; the message is meant for the user."""


def split_addresses(values: Iterable[str]) -> list[str]:
    """Addresses from repeated fields and/or fields with one per line (or comma-separated)."""
    return [part for value in values for part in re.split(r"[\s,]+", value) if part]


def parse_addresses(values: Iterable[str], *, already: Sequence[str] = ()) -> tuple[str, ...]:
    """Validated, de-duplicated addresses; `already` (a key's present ones) count to the limit."""
    addresses: list[str] = []
    for text in split_addresses(values):
        if not _ADDRESS.fullmatch(text):
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise AddressError(f"'{shown}' is not a withdrawal address (letters, digits and "
                               ". _ : -, at most 128 characters)")
        if text not in addresses and text not in already:
            addresses.append(text)
    total = len(addresses) + len(already)
    if total > MAX_WITHDRAW_ADDRESSES:
        raise AddressError(f"at most {MAX_WITHDRAW_ADDRESSES} withdrawal addresses per key "
                           f"({total} given)")
    return tuple(addresses)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # SECURITY: a repeated key is read differently by different parsers (first or last):
    # the upstream must not see another address than the one checked here.
    result: dict[str, object] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate key {name!r}")
        result[name] = value
    return result


def withdrawal_address_of(body: bytes | None,
                          path: Sequence[str] = ("recipient", "address")) -> str:
    """The address at `path` in a JSON body; raises `WithdrawBodyUnreadable` (400) when the
    body is not UTF-8 JSON, repeats a key, or has no non-empty string there."""
    if not body:
        raise WithdrawBodyUnreadable("The withdrawal has no body to read the address from")
    try:
        # Strict UTF-8, no BOM: the bytes mean to us what they mean to the upstream.
        value: object = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WithdrawBodyUnreadable("The withdrawal body is not valid JSON (UTF-8, each key "
                                     "once)") from None
    for name in path:
        if not isinstance(value, dict) or name not in value:
            raise WithdrawBodyUnreadable(
                f"The withdrawal body has no {'.'.join(path)}, which this key's allowed "
                "addresses are checked against")
        value = value[name]
    if not isinstance(value, str) or not value:
        raise WithdrawBodyUnreadable(f"The withdrawal body's {'.'.join(path)} is not an "
                                     "address")
    return value


def refusal_for_address(record: KeyRecord, address: str,
                        now: float) -> WithdrawAddressNotAllowed | None:
    """None when `record` may withdraw to `address` at `now` (unix seconds). Pure."""
    allowed = record.withdraw_addresses
    if not allowed:
        return None
    for candidate, usable_from in allowed:
        # Addresses are public and the list is the key holder's own: a plain compare.
        if candidate == address:
            if now >= usable_from:
                return None
            return WithdrawAddressNotAllowed(
                f"The withdrawal address is allowed for this API key only from "
                f"{format_time(usable_from)} (newly added addresses wait out a cooldown)")
    return WithdrawAddressNotAllowed(
        "The withdrawal address is not one of this API key's allowed addresses")
