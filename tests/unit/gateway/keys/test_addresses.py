"""Allowed withdrawal addresses: parsing, reading the withdrawal body, the cooldown."""

from __future__ import annotations

import pytest

from gateway.http.errors import WithdrawAddressNotAllowed, WithdrawBodyUnreadable
from gateway.keys.addresses import (
    MAX_WITHDRAW_ADDRESSES,
    AddressError,
    parse_addresses,
    refusal_for_address,
    withdrawal_address_of,
)
from gateway.store.base import KeyRecord

NOW = 1_750_000_000.0


def _record(*pairs: tuple[str, float]) -> KeyRecord:
    return KeyRecord(key_id="aaaaaaaaaaaaaaaa", account_id=1,
                     permissions=frozenset({"withdraw"}), allowed_ips=(),
                     secret_hash=b"h" * 32, hash_version=1, withdraw_addresses=pairs)


def test_addresses_one_per_line_or_comma_separated_deduplicated() -> None:
    typed = ["bc1qxy2kgdygjrsqtzq2n0yrf\n\n0xAbC,0xAbC", " rEb8TK3gBgk5auZkwc6sHnwr "]
    assert parse_addresses(typed) == ("bc1qxy2kgdygjrsqtzq2n0yrf", "0xAbC",
                                      "rEb8TK3gBgk5auZkwc6sHnwr")


def test_addresses_keep_their_case() -> None:
    assert parse_addresses(["0xabc", "0xABC"]) == ("0xabc", "0xABC")


@pytest.mark.parametrize("text", ["<script>", "addr with'quote", "-leading", "a" * 129,
                                  "ünïcode"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(AddressError, match="is not a withdrawal address"):
        parse_addresses([text])


def test_at_most_twenty_counting_those_a_key_has() -> None:
    twenty = [f"addr{i}" for i in range(MAX_WITHDRAW_ADDRESSES)]
    assert len(parse_addresses(twenty)) == 20
    with pytest.raises(AddressError, match=r"at most 20 .*21 given"):
        parse_addresses([*twenty, "one-more"])
    with pytest.raises(AddressError, match="21 given"):
        parse_addresses(["new"], already=twenty)
    assert parse_addresses(["addr0"], already=twenty) == ()  # already there: nothing new


def test_the_address_is_read_from_the_exchanges_body() -> None:
    body = b'{"currency":"BTC","amount":"1.0","recipient":{"address":"bc1q","destination_tag":"1"}}'
    assert withdrawal_address_of(body) == "bc1q"
    assert withdrawal_address_of(b'{"to":{"id":"x1"}}', ("to", "id")) == "x1"


@pytest.mark.parametrize("body", [
    None, b"", b"not json", b"[1,2]", b'"bc1q"', b'{"recipient":"bc1q"}',
    b'{"recipient":{}}', b'{"recipient":{"address":""}}', b'{"recipient":{"address":7}}',
    b'{"recipient":{"address":"a","address":"b"}}',  # read first or last by other parsers
    b'{"recipient":{"address":"a"},"recipient":{"address":"b"}}',
    '{"recipient":{"address":"a"}}'.encode("utf-16"),  # not UTF-8
    b'\xef\xbb\xbf{"recipient":{"address":"a"}}',  # a BOM
    b"[" * 100_000,  # nested too deep to parse
])
def test_unreadable_bodies_are_refused(body: bytes | None) -> None:
    with pytest.raises(WithdrawBodyUnreadable) as caught:
        withdrawal_address_of(body)
    assert caught.value.status == 400 and caught.value.code == "ILLEGAL_CHARS"


def test_a_key_without_addresses_may_withdraw_anywhere() -> None:
    assert refusal_for_address(_record(), "anything", NOW) is None


def test_only_listed_addresses_past_their_cooldown() -> None:
    record = _record(("old", NOW - 10), ("new", NOW + 3600))
    assert refusal_for_address(record, "old", NOW) is None
    unlisted = refusal_for_address(record, "evil", NOW)
    assert isinstance(unlisted, WithdrawAddressNotAllowed)
    assert unlisted.status == 403 and unlisted.code == "MISSING_PERMISSION"
    assert "not one of this API key's allowed addresses" in unlisted.text
    cooling = refusal_for_address(record, "new", NOW)
    assert cooling is not None and "only from" in cooling.text
    assert refusal_for_address(record, "new", NOW + 3600) is None
    assert refusal_for_address(record, "OLD", NOW) is not None  # exact, as written
