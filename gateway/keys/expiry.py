"""When a key stops working: its own expiry, a roll's overlap end, or the dormancy policy.

Decided per request from the cached record and the clock, with no store round trip, so a
process whose cache was warm before the expiry refuses the key after it.
"""

from __future__ import annotations

import time

from gateway.config.settings import parse_duration
from gateway.http.errors import KeyExpired
from gateway.store.base import KeyRecord

__all__ = ["format_time", "parse_lifetime", "refusal_for_expiry"]


def format_time(seconds: float) -> str:
    """Unix seconds as the exchange writes times: ISO 8601 in UTC, milliseconds, `Z`."""
    whole = int(seconds)
    millis = round((seconds - whole) * 1000)
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def parse_lifetime(text: str) -> float:
    """`30m`, `12h`, `90d` (or seconds) as seconds; ValueError, for the user, otherwise."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a duration such as 30m, 12h or 90d") from None
    if seconds <= 0:
        raise ValueError(f"'{text}' must be more than zero")
    return seconds


def refusal_for_expiry(record: KeyRecord, now: float, *,
                       dormant_after: float | None = None) -> KeyExpired | None:
    """The refusal for a key past its expiry at `now` (unix seconds), or None.

    `dormant_after`: the policy's seconds of disuse after which a key counts as expired,
    from its last use or, never used, its confirmation. Pure: no I/O.
    """
    expires_at = record.expires_at
    if expires_at is not None and now >= expires_at:
        return KeyExpired(f"The API key expired at {format_time(expires_at)}")
    if dormant_after is not None:
        seen = record.last_used_at or record.confirmed_at
        if seen is not None and now - seen >= dormant_after:
            return KeyExpired(
                f"The API key has not been used since {format_time(seen)} and is dormant "
                f"(unused keys expire after {dormant_after / 86400:g} days)")
    return None
