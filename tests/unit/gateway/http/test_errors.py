"""GatewayError semantics (gateway/http/errors.py); the rendered contract is in tests/contract."""

from __future__ import annotations

import json

import pytest

import gateway.http.errors as errors
from gateway.http.errors import GatewayError, KeyInvalid, PermissionMissing, RateLimited


def _classes() -> list[type[GatewayError]]:
    found = [getattr(errors, name) for name in errors.__all__]
    return [c for c in found if isinstance(c, type) and issubclass(c, GatewayError)]


def test_codes_are_the_contract_vocabulary() -> None:
    contract = {
        (400, "ILLEGAL_CHARS"), (401, "MISSING_CREDENTIALS"), (401, "INVALID_APIKEY"),
        (403, "INVALID_IP_RESTRICTION"), (403, "MISSING_PERMISSION"), (403, "CLIENT_IP_BLOCKED"),
        (404, "ROUTE_NOT_FOUND"), (413, "PAYLOAD_TOO_LARGE"), (431, "HEADERS_TOO_LARGE"),
        (429, "RATELIMIT"), (500, "INTERNAL_SERVER_ERROR"), (502, "SERVICE_UNAVAILABLE"),
        (503, "SERVICE_UNAVAILABLE"), (504, "GATEWAY_TIMEOUT"), (408, "REQUEST_TIMEOUT"),
        (401, "APIKEY_EXPIRED"),
    }
    assert {(c.status, c.code) for c in _classes()} == contract


def test_default_message_and_override() -> None:
    assert KeyInvalid().text == "Invalid API key"
    assert str(KeyInvalid("other")) == "other"
    assert KeyInvalid("").text == "Invalid API key"


def test_every_error_is_raisable_as_gateway_error() -> None:
    for cls in _classes():
        args: tuple[object, ...] = ()
        if cls is PermissionMissing:
            args = ("read",)
        elif cls is RateLimited:
            args = (1.0, 10)
        elif cls is errors.ClientIpBlocked:
            args = (60,)
        with pytest.raises(GatewayError):
            raise cls(*args)  # type: ignore[arg-type]


def test_headers_are_json_safe_strings() -> None:
    error = RateLimited(0.2, 240)
    assert all(isinstance(v, str) for v in error.headers().values())
    assert error.retry_after == 1 and error.limit == 240
    body = json.loads(errors.error_answer(error, "r").partition(b"\r\n\r\n")[2])
    assert body["message"] == "Rate limit exceeded"


def test_message_with_quotes_stays_valid_json() -> None:
    body = json.loads(
        errors.error_answer(KeyInvalid('a "quoted" \\ text'), "r").partition(b"\r\n\r\n")[2])
    assert body["message"] == 'a "quoted" \\ text'
