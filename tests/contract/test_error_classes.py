"""Contract: each `GatewayError` renders the status, code, JSON body and headers the
contract fixes.

Pure: `error_answer` builds the answer's bytes, read back here with llhttp; nothing is served.
Needs no external service.
"""

from __future__ import annotations

import json

import httptools
import pytest

import gateway.http.errors as errors_module
from gateway.http.errors import (
    ClientIpBlocked,
    GatewayError,
    HeadersTooLarge,
    IllegalChars,
    InternalError,
    IpNotAllowed,
    KeyExpired,
    KeyInvalid,
    KeyMissing,
    MalformedRequest,
    PayloadTooLarge,
    PermissionMissing,
    RateLimited,
    RequestTimeout,
    RouteNotFound,
    StoreUnavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
    WithdrawAddressNotAllowed,
    WithdrawBodyUnreadable,
    error_answer,
)

REQUEST_ID = "req-1.2_3"


class Answer:
    """An HTTP answer read back from its bytes, as a client's parser reads it."""

    def __init__(self, data: bytes) -> None:
        self.headers: dict[str, str] = {}
        self.body = b""
        self.complete = False
        parser = httptools.HttpResponseParser(self)
        parser.feed_data(data)
        self.status = parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        assert name.decode() not in self.headers, "a header twice"
        self.headers[name.decode()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def _render(error: GatewayError) -> tuple[Answer, dict[str, str]]:
    response = Answer(error_answer(error, REQUEST_ID))
    assert response.complete
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Request-Id"] == REQUEST_ID
    body = json.loads(response.body)
    assert set(body) == {"error", "message", "request_id"}
    assert body["request_id"] == REQUEST_ID
    assert isinstance(body["message"], str) and body["message"]
    return response, body


def test_every_error_class_is_covered_here() -> None:
    classes = {
        name for name in errors_module.__all__
        if isinstance(getattr(errors_module, name), type)
        and issubclass(getattr(errors_module, name), GatewayError)
    }
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_")}
    missing = {c for c in classes if _snake(c) not in tested}
    assert not missing


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def test_gateway_error() -> None:
    response, body = _render(GatewayError())
    assert response.status == 500
    assert body["error"] == "INTERNAL_SERVER_ERROR"
    assert "Retry-After" not in response.headers
    assert "WWW-Authenticate" not in response.headers


def test_illegal_chars() -> None:
    response, body = _render(IllegalChars())
    assert (response.status, body["error"]) == (400, "ILLEGAL_CHARS")
    assert "WWW-Authenticate" not in response.headers


def test_malformed_request() -> None:
    # Requests the edge cannot read: the exchange's 400 code, so clients raise BadRequest.
    response, body = _render(MalformedRequest())
    assert (response.status, body["error"]) == (400, "ILLEGAL_CHARS")
    assert "WWW-Authenticate" not in response.headers


def test_key_missing() -> None:
    response, body = _render(KeyMissing())
    assert (response.status, body["error"]) == (401, "MISSING_CREDENTIALS")
    assert body["message"] == "No API key found in request"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="keygate"'


def test_key_invalid() -> None:
    response, body = _render(KeyInvalid())
    assert (response.status, body["error"]) == (401, "INVALID_APIKEY")
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="keygate", error="invalid_token"'
    )


def test_key_invalid_says_the_same_whatever_the_cause() -> None:
    # No oracle: unknown, malformed and deleted keys must read alike.
    assert _render(KeyInvalid())[1] == _render(KeyInvalid())[1]
    assert _render(KeyInvalid())[1]["message"] == "Invalid API key"


def test_key_expired() -> None:
    # A key whose secret was right: the holder learns why (its expiry, a roll, dormancy).
    response, body = _render(KeyExpired("The API key expired at 2030-01-01T00:00:00.000Z"))
    assert (response.status, body["error"]) == (401, "APIKEY_EXPIRED")
    assert "2030-01-01" in body["message"]
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="keygate", error="invalid_token"'
    )
    assert _render(KeyExpired())[1]["message"] == "The API key has expired"


def test_withdraw_address_not_allowed() -> None:
    response, body = _render(WithdrawAddressNotAllowed())
    assert (response.status, body["error"]) == (403, "MISSING_PERMISSION")
    assert "address is not allowed" in body["message"]


def test_withdraw_body_unreadable() -> None:
    response, body = _render(WithdrawBodyUnreadable())
    assert (response.status, body["error"]) == (400, "ILLEGAL_CHARS")
    assert "recipient address" in body["message"]


def test_ip_not_allowed() -> None:
    response, body = _render(IpNotAllowed())
    assert (response.status, body["error"]) == (403, "INVALID_IP_RESTRICTION")
    assert "WWW-Authenticate" not in response.headers


def test_ip_not_allowed_names_the_address() -> None:
    _, body = _render(IpNotAllowed.for_address("203.0.113.9"))
    assert body["message"] == "The client IP address 203.0.113.9 is not allowed for this API key"


def test_ip_not_allowed_keeps_a_specific_message() -> None:
    _, body = _render(IpNotAllowed("needs an allowlist"))
    assert body == {"error": "INVALID_IP_RESTRICTION", "message": "needs an allowlist",
                    "request_id": REQUEST_ID}


def test_permission_missing() -> None:
    error = PermissionMissing("withdraw")
    response, body = _render(error)
    assert (response.status, body["error"]) == (403, "MISSING_PERMISSION")
    assert "'withdraw'" in body["message"]
    assert error.permission == "withdraw"


def test_client_ip_blocked() -> None:
    response, body = _render(ClientIpBlocked(120))
    assert (response.status, body["error"]) == (403, "CLIENT_IP_BLOCKED")
    assert response.headers["Retry-After"] == "120"


def test_route_not_found() -> None:
    response, body = _render(RouteNotFound())
    assert (response.status, body["error"]) == (404, "ROUTE_NOT_FOUND")


def test_payload_too_large() -> None:
    response, body = _render(PayloadTooLarge())
    assert (response.status, body["error"]) == (413, "PAYLOAD_TOO_LARGE")


def test_rate_limited() -> None:
    response, body = _render(RateLimited(2.5, 200))
    assert (response.status, body["error"]) == (429, "RATELIMIT")
    assert response.headers["Retry-After"] == "3"  # whole seconds, rounded up
    assert response.headers["X-RateLimit-Limit"] == "200"
    assert response.headers["X-RateLimit-Remaining"] == "0"


@pytest.mark.parametrize(("retry_after", "header"), [(0.0, "1"), (0.01, "1"), (1.0, "1"),
                                                      (1.2, "2"), (59.0, "59")])
def test_rate_limited_retry_after_is_a_positive_whole_number(retry_after: float,
                                                             header: str) -> None:
    assert RateLimited(retry_after, 10).headers()["Retry-After"] == header


def test_headers_too_large() -> None:
    response, body = _render(HeadersTooLarge())
    assert (response.status, body["error"]) == (431, "HEADERS_TOO_LARGE")


def test_internal_error() -> None:
    response, body = _render(InternalError())
    assert (response.status, body["error"]) == (500, "INTERNAL_SERVER_ERROR")
    assert body["message"] == "Internal error"


def test_upstream_unavailable() -> None:
    response, body = _render(UpstreamUnavailable())
    assert (response.status, body["error"]) == (502, "SERVICE_UNAVAILABLE")


def test_store_unavailable() -> None:
    response, body = _render(StoreUnavailable())
    assert (response.status, body["error"]) == (503, "SERVICE_UNAVAILABLE")


def test_upstream_timeout() -> None:
    response, body = _render(UpstreamTimeout())
    assert (response.status, body["error"]) == (504, "GATEWAY_TIMEOUT")
    assert "Retry-After" not in response.headers


def test_error_headers_are_fresh_per_call() -> None:
    # error_answer adds X-Request-Id beside what headers() returns: it must not leak.
    error = KeyMissing()
    error_answer(error, "first")
    assert "X-Request-Id" not in error.headers()
    assert Answer(error_answer(error, "second")).headers["X-Request-Id"] == "second"


def test_request_timeout() -> None:
    response, body = _render(RequestTimeout())
    assert (response.status, body["error"]) == (408, "REQUEST_TIMEOUT")


def test_a_closing_answer_says_so_and_rate_headers_ride_along() -> None:
    answer = Answer(error_answer(KeyMissing(), REQUEST_ID, closing=True, rate=(200, 17)))
    assert answer.headers["Connection"] == "close"
    assert (answer.headers["X-RateLimit-Limit"], answer.headers["X-RateLimit-Remaining"]) == (
        "200", "17")
