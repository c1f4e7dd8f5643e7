"""Expiry decided from a record and the clock: own expiry, a roll's end, dormancy."""

from __future__ import annotations

import pytest

from gateway.http.errors import KeyExpired
from gateway.keys.expiry import format_time, parse_lifetime, refusal_for_expiry
from gateway.store.base import KeyRecord

NOW = 1_750_000_000.0
DAY = 86400.0


def _record(**fields: object) -> KeyRecord:
    return KeyRecord(key_id="aaaaaaaaaaaaaaaa", account_id=1, permissions=frozenset({"read"}),
                     allowed_ips=(), secret_hash=b"h" * 32, hash_version=1,
                     **fields)  # type: ignore[arg-type]


def test_a_key_without_expiry_or_policy_never_expires() -> None:
    assert refusal_for_expiry(_record(), NOW) is None
    assert refusal_for_expiry(_record(confirmed_at=NOW - 1000 * DAY), NOW) is None


def test_a_key_works_until_its_expiry_and_not_at_it() -> None:
    record = _record(expires_at=NOW)
    assert refusal_for_expiry(record, NOW - 0.001) is None
    refusal = refusal_for_expiry(record, NOW)
    assert isinstance(refusal, KeyExpired)
    assert refusal.code == "APIKEY_EXPIRED" and refusal.status == 401
    assert format_time(NOW) in refusal.text


def test_dormancy_counts_from_the_last_use_else_the_confirmation() -> None:
    used = _record(confirmed_at=NOW - 100 * DAY, last_used_at=NOW - 10 * DAY)
    assert refusal_for_expiry(used, NOW, dormant_after=30 * DAY) is None
    assert refusal_for_expiry(used, NOW, dormant_after=10 * DAY) is not None
    never_used = _record(confirmed_at=NOW - 31 * DAY)
    refusal = refusal_for_expiry(never_used, NOW, dormant_after=30 * DAY)
    assert refusal is not None and "dormant" in refusal.text and "30 days" in refusal.text
    fresh = _record(confirmed_at=NOW - 29 * DAY)
    assert refusal_for_expiry(fresh, NOW, dormant_after=30 * DAY) is None


def test_format_time_is_the_exchanges_iso_form() -> None:
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert format_time(1.9996) == "1970-01-01T00:00:02.000Z"


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("12h", 43200),
                                               ("90d", 90 * DAY), ("45", 45)])
def test_lifetimes(text: str, seconds: float) -> None:
    assert parse_lifetime(text) == seconds


@pytest.mark.parametrize("text", ["0", "0d", "-1d", "soon", "1w", ""])
def test_bad_lifetimes(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|more than zero"):
        parse_lifetime(text)
