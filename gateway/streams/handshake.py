"""The opening handshake of both legs (RFC 6455 section 4), done from parsed heads: the
client's upgrade is checked and answered with 101, and the gateway's own upgrade request to
the upstream is made and its answer checked. Frames are wsproto's job once both are done.

Neither leg negotiates an extension or a subprotocol: permessage-deflate would let a small
frame inflate past the message size bound before it could be measured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable

from gateway.http.errors import GatewayError, MalformedRequest
from gateway.http.request import RequestView

__all__ = [
    "NotAnUpgrade",
    "TooManySessions",
    "VersionUnsupported",
    "accept_for",
    "check_upgrade",
    "kept_headers",
    "switching_protocols",
    "upgrade_request_framing",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY = b"sec-websocket-key"
_VERSION = b"sec-websocket-version"
_WS_PREFIX = b"sec-websocket-"


class NotAnUpgrade(GatewayError):
    """A stream path asked for anything but a WebSocket upgrade."""

    status = 426
    code = "ROUTE_NOT_FOUND"  # no HTTP route here: only a stream
    message = ("This path serves WebSocket streams: upgrade with GET, Upgrade: websocket, "
               "Connection: Upgrade and Sec-WebSocket-Version: 13")

    def headers(self) -> dict[str, str]:
        return {"Upgrade": "websocket", "Sec-WebSocket-Version": "13"}


class VersionUnsupported(NotAnUpgrade):
    message = "Only WebSocket version 13 is spoken here"


class TooManySessions(GatewayError):
    """The client address holds as many stream sessions as it may."""

    status = 429
    code = "RATELIMIT"
    message = "Too many stream sessions from this client address"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


def accept_for(key: bytes) -> bytes:
    """`Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())  # noqa: S324 (RFC 6455)


def check_upgrade(view: RequestView, is_upgrade: bool) -> bytes:
    """The client's `Sec-WebSocket-Key` when `view` is a valid WebSocket upgrade.

    `is_upgrade`: the parser saw `Connection: upgrade` beside an `Upgrade` header. Raises
    `NotAnUpgrade`, `VersionUnsupported`, or `MalformedRequest` for a bad key.
    """
    if (view.method != "GET" or not is_upgrade or view.version != "1.1"
            or view.upgrade is None
            or b"websocket" not in [t.strip() for t in view.upgrade.lower().split(b",")]):
        raise NotAnUpgrade
    keys = [value for name, value in view.headers if name.lower() == _KEY]
    versions = [value for name, value in view.headers if name.lower() == _VERSION]
    if len(versions) != 1 or versions[0].strip() != b"13":
        raise VersionUnsupported
    if len(keys) != 1:
        raise MalformedRequest("A WebSocket upgrade carries one Sec-WebSocket-Key")
    key = keys[0].strip()
    try:
        is_valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        is_valid = False
    if not is_valid:
        raise MalformedRequest("Sec-WebSocket-Key is not 16 bytes in base64")
    return key


def switching_protocols(key: bytes, request_id: str) -> bytes:
    """The 101 answer that opens the client's stream."""
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_for(key) + b"\r\nX-Request-Id: "
            + request_id.encode() + b"\r\n\r\n")


def kept_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The client's headers that may travel on the upstream's upgrade: not its handshake's
    own, which belong to the client's leg (the gateway's leg makes its own)."""
    return [(name, value) for name, value in headers
            if not name.lower().startswith(_WS_PREFIX)]


def upgrade_request_framing() -> tuple[bytes, bytes]:
    """A fresh `Sec-WebSocket-Key` and the headers that make a request an upgrade."""
    key = base64.b64encode(os.urandom(16))
    return key, (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
                 + b"\r\nSec-WebSocket-Version: 13\r\n")
