"""Client address derivation behind trusted proxies (gateway/http/client_ip.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from gateway.config.settings import Network
from gateway.http.client_ip import client_ip as client_address
from gateway.http.client_ip import forwarded_for, is_trusted, parse_ip

PROXIES: tuple[Network, ...] = (ipaddress.ip_network("10.0.0.0/8"),
                                ipaddress.ip_network("fd00::/8"))


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def client_ip(peer: str | None, xff_headers: Sequence[str],
              trusted: Sequence[Network]) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address alone, once its text is checked to be the canonical one."""
    address, text = client_address(peer, xff_headers, trusted)
    assert text == str(address)
    return address


def test_untrusted_peer_ignores_x_forwarded_for() -> None:
    assert client_ip("203.0.113.9", ["1.2.3.4"], PROXIES) == ip("203.0.113.9")


def test_no_trusted_proxies_configured_ignores_x_forwarded_for() -> None:
    assert client_ip("10.0.0.1", ["1.2.3.4"], ()) == ip("10.0.0.1")


def test_trusted_proxy_takes_the_right_most_untrusted_entry() -> None:
    # The client claimed 6.6.6.6; the proxy appended the address it saw.
    assert client_ip("10.0.0.1", ["6.6.6.6, 198.51.100.7"], PROXIES) == ip("198.51.100.7")


def test_chain_of_trusted_proxies_is_walked() -> None:
    assert client_ip("10.0.0.1", ["6.6.6.6, 198.51.100.7, 10.1.1.1, 10.2.2.2"],
                     PROXIES) == ip("198.51.100.7")


def test_several_headers_are_one_list_in_order() -> None:
    headers = ["6.6.6.6", "198.51.100.7, 10.1.1.1"]
    assert forwarded_for(headers) == ["6.6.6.6", "198.51.100.7", "10.1.1.1"]
    assert client_ip("10.0.0.1", headers, PROXIES) == ip("198.51.100.7")


def test_trusted_proxy_without_header_is_the_client() -> None:
    assert client_ip("10.0.0.1", [], PROXIES) == ip("10.0.0.1")
    assert client_ip("10.0.0.1", [" , "], PROXIES) == ip("10.0.0.1")


def test_all_entries_trusted_gives_the_left_most() -> None:
    assert client_ip("10.0.0.1", ["10.9.9.9, 10.8.8.8"], PROXIES) == ip("10.9.9.9")


@pytest.mark.parametrize("bad", ["unknown", "1.2.3.4:5678", "999.1.1.1", "_hidden", "[::1]"])
def test_malformed_entry_stops_at_the_last_believed_hop(bad: str) -> None:
    # Nothing left of a malformed entry can be believed, whatever it says.
    assert client_ip("10.0.0.1", [f"6.6.6.6, {bad}"], PROXIES) == ip("10.0.0.1")
    assert client_ip("10.0.0.1", [f"6.6.6.6, {bad}, 10.3.3.3"], PROXIES) == ip("10.3.3.3")
    # A malformed entry left of the first untrusted hop is never reached.
    assert client_ip("10.0.0.1", [f"{bad}, 198.51.100.7"], PROXIES) == ip("198.51.100.7")


def test_ipv4_mapped_ipv6_is_folded_to_ipv4() -> None:
    assert parse_ip("::ffff:203.0.113.9") == ip("203.0.113.9")
    # A dual-stack socket reports an IPv4 proxy this way: it is still trusted.
    assert client_ip("::ffff:10.0.0.1", ["198.51.100.7"], PROXIES) == ip("198.51.100.7")
    assert client_ip("10.0.0.1", ["::ffff:198.51.100.7"], PROXIES) == ip("198.51.100.7")
    assert client_ip("::ffff:203.0.113.9", [], ()) == ip("203.0.113.9")


def test_ipv6() -> None:
    assert client_ip("2001:db8::1", ["1.2.3.4"], PROXIES) == ip("2001:db8::1")
    assert client_ip("fd00::1", ["2001:db8::7, fd00::2"], PROXIES) == ip("2001:db8::7")
    assert client_ip("fd00::1", ["2001:db8::7"], PROXIES) == ip("2001:db8::7")
    assert parse_ip("fe80::1%eth0") == ip("fe80::1")
    assert parse_ip(" 2001:DB8::1 ") == ip("2001:db8::1")


def test_ipv4_never_matches_an_ipv6_network() -> None:
    assert not is_trusted(ip("0.0.0.1"), (ipaddress.ip_network("::/0"),))
    assert is_trusted(ip("10.2.3.4"), PROXIES)
    assert not is_trusted(ip("11.2.3.4"), PROXIES)


def test_unreadable_peer() -> None:
    unknown = ipaddress.IPv4Address(0)  # the unspecified address: no allowlist holds it
    assert client_ip(None, ["1.2.3.4"], PROXIES) == unknown
    assert client_ip("garbage", ["1.2.3.4"], PROXIES) == unknown


def test_parse_ip_refuses_garbage() -> None:
    for text in ["", "1.2.3", "01.2.3.4", "example.com", "1.2.3.4/32"]:
        assert parse_ip(text) is None, text
