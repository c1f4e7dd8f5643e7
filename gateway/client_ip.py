"""Which address a request comes from: the socket peer, unless that peer is a trusted proxy."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from gateway.settings import Network

__all__ = ["IpAddress", "client_ip", "fold_ipv4_mapped", "forwarded_for", "ip_text",
           "is_trusted", "parse_ip"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_UNKNOWN = ipaddress.IPv4Address("0.0.0.0")  # noqa: S104 (a peer we could not read)


def fold_ipv4_mapped(address: IpAddress) -> IpAddress:
    """`::ffff:a.b.c.d` as `a.b.c.d`: a dual-stack socket's view of an IPv4 client."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=4096)  # peers repeat: keep-alive clients, proxies
def parse_ip(text: str) -> IpAddress | None:
    """An address with IPv4-mapped IPv6 folded to IPv4 (a dual-stack socket's view of IPv4)."""
    try:
        address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    return fold_ipv4_mapped(address)


@functools.lru_cache(maxsize=4096)
def ip_text(address: IpAddress) -> str:
    """`str(address)`, remembered: logs, headers and counters need it on every request, and
    ipaddress builds it anew each time (about 1 us for IPv4, 4 us for IPv6)."""
    return str(address)


def is_trusted(address: IpAddress, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


def forwarded_for(headers: Sequence[str]) -> list[str]:
    """The X-Forwarded-For entries of every such header, in order."""
    return [part.strip() for header in headers for part in header.split(",") if part.strip()]


def client_ip(peer: str | None, xff_headers: Sequence[str],
              trusted: Sequence[Network]) -> IpAddress:
    """The peer; if it is a trusted proxy, the right-most X-Forwarded-For entry not trusted.

    SECURITY: entries left of the first untrusted hop were written by the client and are
    ignored; a malformed entry stops the walk at the last address we could believe.
    """
    address = parse_ip(peer) if peer else None
    if address is None:
        return _UNKNOWN
    if not trusted or not is_trusted(address, trusted):
        return address
    for entry in reversed(forwarded_for(xff_headers)):
        hop = parse_ip(entry)
        if hop is None:
            return address
        address = hop
        if not is_trusted(hop, trusted):
            return hop
    return address
