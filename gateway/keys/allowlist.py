"""IP allowlists of keys: parsing what a user or ops typed (0 to 5 addresses per key)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from gateway.http.client_ip import IpAddress, fold_ipv4_mapped

__all__ = ["MAX_ALLOWED_IPS", "AllowlistError", "parse_allowlist", "split_ips"]

MAX_ALLOWED_IPS = 5


class AllowlistError(ValueError):
    """A bad allowlist; the message is meant for the user."""


def split_ips(values: Iterable[str]) -> list[str]:
    """Addresses from repeated fields and/or fields separated by commas or newlines."""
    return [part for value in values for part in re.split(r"[\s,]+", value) if part]


def parse_allowlist(values: Iterable[str]) -> tuple[IpAddress, ...]:
    """Validated, de-duplicated addresses; IPv4-mapped IPv6 is folded to IPv4."""
    addresses: list[IpAddress] = []
    for text in split_ips(values):
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise AllowlistError(f"'{text}' is not a valid IPv4 or IPv6 address") from None
        address = fold_ipv4_mapped(address)
        if address not in addresses:
            addresses.append(address)
    if len(addresses) > MAX_ALLOWED_IPS:
        raise AllowlistError(
            f"at most {MAX_ALLOWED_IPS} IP addresses per key ({len(addresses)} given)"
        )
    return tuple(addresses)
