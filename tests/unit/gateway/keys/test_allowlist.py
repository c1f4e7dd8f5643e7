"""Key IP allowlists: parsing the admin form's input (gateway/pipeline/allowlist.py)."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.keys.allowlist import MAX_ALLOWED_IPS, AllowlistError, parse_allowlist, split_ips


def ips(*texts: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    return tuple(ipaddress.ip_address(t) for t in texts)


def test_empty_means_any() -> None:
    assert parse_allowlist([]) == ()
    assert parse_allowlist(["", "  ", "\n"]) == ()


def test_repeated_fields() -> None:
    assert parse_allowlist(["1.2.3.4", "2001:db8::1"]) == ips("1.2.3.4", "2001:db8::1")


@pytest.mark.parametrize("text", ["1.2.3.4,5.6.7.8", "1.2.3.4, 5.6.7.8", "1.2.3.4\n5.6.7.8",
                                  "1.2.3.4\r\n5.6.7.8\n", " 1.2.3.4 ,\n, 5.6.7.8 "])
def test_one_field_with_commas_or_newlines(text: str) -> None:
    assert parse_allowlist([text]) == ips("1.2.3.4", "5.6.7.8")


def test_mixed_fields_keep_their_order() -> None:
    assert parse_allowlist(["9.9.9.9", "1.1.1.1,2.2.2.2"]) == ips("9.9.9.9", "1.1.1.1",
                                                                   "2.2.2.2")
    assert split_ips(["a,b", "c\nd"]) == ["a", "b", "c", "d"]


def test_five_addresses_are_allowed() -> None:
    five = [f"10.0.0.{i}" for i in range(1, 6)]
    assert MAX_ALLOWED_IPS == 5
    assert len(parse_allowlist(five)) == 5


def test_sixth_address_is_refused_with_a_clear_message() -> None:
    with pytest.raises(AllowlistError) as caught:
        parse_allowlist([",".join(f"10.0.0.{i}" for i in range(1, 7))])
    assert str(caught.value) == "at most 5 IP addresses per key (6 given)"


def test_duplicates_collapse_before_counting() -> None:
    five = [f"10.0.0.{i}" for i in range(1, 6)]
    assert parse_allowlist([*five, "10.0.0.1", "::ffff:10.0.0.2"]) == ips(*five)


@pytest.mark.parametrize("bad", ["1.2.3", "300.1.1.1", "example.com", "10.0.0.0/8",
                                 "1.2.3.4:80", "01.2.3.4", "::g"])
def test_invalid_address_message_names_it(bad: str) -> None:
    with pytest.raises(AllowlistError) as caught:
        parse_allowlist(["1.2.3.4", bad])
    assert str(caught.value) == f"'{bad}' is not a valid IPv4 or IPv6 address"
    assert isinstance(caught.value, ValueError)


def test_ipv4_mapped_is_folded_to_ipv4() -> None:
    result = parse_allowlist(["::ffff:192.0.2.1"])
    assert result == ips("192.0.2.1")
    assert isinstance(result[0], ipaddress.IPv4Address)


def test_ipv6_is_compressed_and_deduplicated() -> None:
    assert parse_allowlist(["2001:DB8:0:0:0:0:0:1", "2001:db8::1"]) == ips("2001:db8::1")
