"""The gateway's errors: one class per condition, each carrying its status and code.

`error_answer()` is the only code that writes the error JSON of the contract.
Codes are the exchange's own, so a client written for it raises its usual exception.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import ClassVar

__all__ = [
    "ClientIpBlocked",
    "GatewayError",
    "HeadersTooLarge",
    "IllegalChars",
    "InternalError",
    "IpNotAllowed",
    "KeyExpired",
    "KeyInvalid",
    "KeyMissing",
    "MalformedRequest",
    "PayloadTooLarge",
    "PermissionMissing",
    "RateLimited",
    "RequestTimeout",
    "RouteNotFound",
    "StoreUnavailable",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "WithdrawAddressNotAllowed",
    "WithdrawBodyUnreadable",
    "answer_bytes",
    "error_answer",
]


class GatewayError(Exception):
    """A request refused with the contract's status, code and a short message."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_SERVER_ERROR"
    message: ClassVar[str] = "Internal error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)

    @property
    def text(self) -> str:
        return str(self)

    def headers(self) -> dict[str, str]:
        """Extra response headers this error needs."""
        return {}


# --- 4xx ---------------------------------------------------------------------------------


class IllegalChars(GatewayError):
    status = 400
    code = "ILLEGAL_CHARS"
    message = "The request path contains characters or encodings that are not allowed"


class MalformedRequest(GatewayError):
    """Bytes the edge could not read as one request: not HTTP/1.1, or framed two ways."""

    status = 400
    code = "ILLEGAL_CHARS"  # the exchange's code for a request it cannot read
    message = "The request is not valid HTTP/1.1"


class KeyMissing(GatewayError):
    status = 401
    code = "MISSING_CREDENTIALS"
    message = "No API key found in request"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="keygate"'}


class KeyInvalid(GatewayError):
    # One code for malformed, unknown, unconfirmed and deleted keys: no oracle.
    status = 401
    code = "INVALID_APIKEY"
    message = "Invalid API key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="keygate", error="invalid_token"'}


class KeyExpired(GatewayError):
    """The secret is right, but the key is past its expiry: its own, the end of a roll's
    overlap, or the dormancy policy's."""

    status = 401
    code = "APIKEY_EXPIRED"
    message = "The API key has expired"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="keygate", error="invalid_token"'}


class WithdrawBodyUnreadable(GatewayError):
    """A withdrawal that a key with allowed addresses sends, whose address cannot be read."""

    status = 400
    code = "ILLEGAL_CHARS"  # the exchange's code for a request it cannot read
    message = "The withdrawal body must be a JSON object with the recipient address"


class IpNotAllowed(GatewayError):
    status = 403
    code = "INVALID_IP_RESTRICTION"
    message = "The client IP address is not allowed for this API key"

    @classmethod
    def for_address(cls, address: str) -> IpNotAllowed:
        """Naming the address the gateway saw (the client's own, behind trusted proxies)."""
        return cls(f"The client IP address {address} is not allowed for this API key")


class PermissionMissing(GatewayError):
    status = 403
    code = "MISSING_PERMISSION"

    def __init__(self, permission: str) -> None:
        super().__init__(f"The API key lacks the '{permission}' permission this route requires")
        self.permission = permission


class WithdrawAddressNotAllowed(GatewayError):
    status = 403
    code = "MISSING_PERMISSION"
    message = "The withdrawal address is not allowed for this API key"


class ClientIpBlocked(GatewayError):
    status = 403
    code = "CLIENT_IP_BLOCKED"
    message = "The client IP address is blocked after too many failed authentications"

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RouteNotFound(GatewayError):
    status = 404
    code = "ROUTE_NOT_FOUND"
    message = "No route matches this method and path"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"
    message = "The request body is larger than allowed"


class RateLimited(GatewayError):
    status = 429
    code = "RATELIMIT"
    message = "Rate limit exceeded"

    def __init__(self, retry_after: float, limit: int) -> None:
        super().__init__()
        self.retry_after = max(1, int(retry_after + 0.999))
        self.limit = limit

    def headers(self) -> dict[str, str]:
        return {
            "Retry-After": str(self.retry_after),
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": "0",
        }


class RequestTimeout(GatewayError):
    status = 408
    code = "REQUEST_TIMEOUT"
    message = "The request did not arrive in time"


class HeadersTooLarge(GatewayError):
    status = 431
    code = "HEADERS_TOO_LARGE"
    message = "The request headers are larger than allowed"


# --- 5xx ---------------------------------------------------------------------------------


class InternalError(GatewayError):
    """A bug: logged with the request id, answered with a generic message."""


class UpstreamUnavailable(GatewayError):
    status = 502
    code = "SERVICE_UNAVAILABLE"
    message = "The exchange could not be reached"


class StoreUnavailable(GatewayError):
    # Fail closed: a key we cannot check is a key we refuse.
    status = 503
    code = "SERVICE_UNAVAILABLE"
    message = "The key store is unavailable; try again shortly"


class UpstreamTimeout(GatewayError):
    status = 504
    code = "GATEWAY_TIMEOUT"
    message = "The exchange did not answer in time; the outcome of a POST or DELETE is unknown"


_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


def answer_bytes(status: int, body: bytes, headers: list[tuple[str, str]], *,
                 content_type: bytes = b"application/json", closing: bool = False) -> bytes:
    """A whole HTTP/1.1 answer the gateway makes itself (its errors, health, introspection)."""
    head = [b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            % (status, _REASONS.get(status, b"Unknown"), content_type, len(body))]
    for name, value in headers:
        head.append(f"{name}: {value}\r\n".encode("latin-1"))
    if closing:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head) + body


def error_answer(error: GatewayError, request_id: str, *, closing: bool = False,
                 rate: tuple[int, int] | None = None) -> bytes:
    """The contract's JSON error with the error's status and headers, as bytes to send."""
    body = json.dumps({"error": error.code, "message": error.text,
                       "request_id": request_id}).encode()
    headers = [*error.headers().items(), ("X-Request-Id", request_id)]
    if rate is not None and error.status != 429:  # a 429 carries its own
        headers += [("X-RateLimit-Limit", str(rate[0])), ("X-RateLimit-Remaining", str(rate[1]))]
    return answer_bytes(error.status, body, headers, closing=closing)
