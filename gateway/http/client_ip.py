"""Which address a request comes from: the socket peer, unless that peer is a trusted proxy.

Addresses travel with their text (`Address`): logs, headers and counters need the text on
every request, and ipaddress's objects are slow to print and to hash (a dict keyed by them
costs a Python-level `__hash__` and `__eq__` per lookup). Both are made once per distinct
string, in a cache keyed by that string.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from gateway.config.settings import Network

__all__ = ["Address", "IpAddress", "client_ip", "fold_ipv4_mapped", "forwarded_for",
           "is_trusted", "parse_address", "parse_ip"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Address = tuple[IpAddress, str]  # an address and its canonical text
_UNKNOWN: Address = (ipaddress.IPv4Address("0.0.0.0"), "0.0.0.0")  # noqa: S104 (unreadable)


def fold_ipv4_mapped(address: IpAddress) -> IpAddress:
    """`::ffff:a.b.c.d` as `a.b.c.d`: a dual-stack socket's view of an IPv4 client."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=4096)  # peers repeat: keep-alive clients, proxies
def parse_address(text: str) -> Address | None:
    """An address with IPv4-mapped IPv6 folded to IPv4 (a dual-stack socket's view of IPv4),
    and its canonical text."""
    try:
        address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    address = fold_ipv4_mapped(address)
    return address, str(address)


def parse_ip(text: str) -> IpAddress | None:
    """`parse_address` without the text."""
    parsed = parse_address(text)
    return parsed[0] if parsed is not None else None


def is_trusted(address: IpAddress, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


def forwarded_for(headers: Sequence[str]) -> list[str]:
    """The X-Forwarded-For entries of every such header, in order."""
    return [part.strip() for header in headers for part in header.split(",") if part.strip()]


def client_ip(peer: str | None, xff_headers: Sequence[str],
              trusted: Sequence[Network]) -> Address:
    """The peer; if it is a trusted proxy, the right-most X-Forwarded-For entry not trusted.

    SECURITY: entries left of the first untrusted hop were written by the client and are
    ignored; a malformed entry stops the walk at the last address we could believe.
    """
    address = parse_address(peer) if peer else None
    if address is None:
        return _UNKNOWN
    if not trusted or not is_trusted(address[0], trusted):
        return address
    for entry in reversed(forwarded_for(xff_headers)):
        hop = parse_address(entry)
        if hop is None:
            return address
        address = hop
        if not is_trusted(hop[0], trusted):
            return hop
    return address
