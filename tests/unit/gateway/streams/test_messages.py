"""The gateway's own stream messages (gateway/streams/messages.py) and what a key's record
says of its expiry (gateway/streams/access.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from gateway.streams.access import expiry_of
from gateway.streams.messages import CLOSE_AFTER, authenticated, error_message, stamp


def test_errors_have_the_exchange_s_shape() -> None:
    error = json.loads(error_message("MISSING_PERMISSION", "ORDERS needs 'trade'"))
    assert error == {"error": "MISSING_PERMISSION", "message": "ORDERS needs 'trade'",
                     "channel_name": "SYSTEM", "type": "ERROR", "time": error["time"]}
    assert "message" not in json.loads(error_message("INVALID_APIKEY"))


def test_authenticated() -> None:
    answer = json.loads(authenticated())
    assert (answer["channel_name"], answer["type"]) == ("SYSTEM", "AUTHENTICATED")


def test_time_is_utc_milliseconds() -> None:
    assert stamp(1700000000.25) == "2023-11-14T22:13:20.250Z"


def test_only_a_bad_key_ends_the_session() -> None:
    assert set(CLOSE_AFTER) == {"INVALID_APIKEY", "APIKEY_EXPIRED", "INVALID_IP_RESTRICTION",
                                "CLIENT_IP_BLOCKED"}
    assert set(CLOSE_AFTER.values()) == {1008}


def test_expiry_from_a_record() -> None:
    record: Any = SimpleNamespace(expires_at=12.5)
    assert expiry_of(record) == 12.5
    assert expiry_of(SimpleNamespace(expires_at=None)) is None  # type: ignore[arg-type]
