"""The Redis form of a key record: MAC'd, bound to its key id, refused when touched."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.store.base import (
    KeyRecord,
    RecordRejected,
    decode_record,
    encode_record,
    record_mac_key,
)

KEY = record_mac_key("pepper one")
OLD = record_mac_key("pepper zero")


def _record(key_id: str = "aaaaaaaaaaaaaaaa") -> KeyRecord:
    return KeyRecord(key_id=key_id, account_id=42, permissions=frozenset({"read", "trade"}),
                     allowed_ips=(ipaddress.ip_network("192.0.2.1/32"),),
                     secret_hash=bytes(range(32)), hash_version=1)


def test_a_record_survives_the_round_trip() -> None:
    record = _record()
    assert decode_record(record.key_id, encode_record(record, KEY), (KEY,)) == record


def test_the_mac_key_is_not_the_pepper_and_depends_on_it() -> None:
    assert KEY != b"pepper one" and KEY != OLD and len(KEY) == 32


def test_a_record_made_under_an_older_pepper_is_accepted_while_it_is_configured() -> None:
    record = _record()
    assert decode_record(record.key_id, encode_record(record, OLD), (KEY, OLD)) == record
    with pytest.raises(RecordRejected):
        decode_record(record.key_id, encode_record(record, OLD), (KEY,))


@pytest.mark.parametrize("change", [
    lambda v: v.replace(b'"a":42', b'"a":43'),
    lambda v: v.replace(b'"read","trade"', b'"read","trade","withdraw"'),
    lambda v: v.replace(b'"i":["192.0.2.1/32"]', b'"i":[]'),
    lambda v: v[:-1],
    lambda v: v.split(b".", 2)[2],  # the body alone, as an older gateway wrote it
    lambda v: b"2" + v[1:],
    lambda v: b"",
])
def test_any_change_is_refused(change: object) -> None:
    record = _record()
    value = encode_record(record, KEY)
    changed = change(value)  # type: ignore[operator]
    assert changed != value
    with pytest.raises(RecordRejected):
        decode_record(record.key_id, changed, (KEY,))


def test_a_record_is_bound_to_its_key_id() -> None:
    value = encode_record(_record("aaaaaaaaaaaaaaaa"), KEY)
    with pytest.raises(RecordRejected):
        decode_record("bbbbbbbbbbbbbbbb", value, (KEY,))


def test_no_mac_key_accepts_nothing() -> None:
    with pytest.raises(RecordRejected):
        decode_record("aaaaaaaaaaaaaaaa", encode_record(_record(), KEY), ())
