"""The envelope of every stream message, and the exchange's system messages.

Every message the exchange sends carries ``type`` and ``time``; channel messages also carry
``channel_name``. Errors are ``{"error": CODE, "channel_name": "SYSTEM", "type": "ERROR", ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from ..clock import iso, now

__all__ = [
    "SYSTEM",
    "StreamError",
    "connection_closing",
    "encode",
    "error",
    "heartbeat",
    "on_channel",
    "subscriptions",
    "unsubscribed",
]

SYSTEM = "SYSTEM"


class StreamError(Exception):
    """A message the exchange refuses with a SYSTEM ERROR; the session stays open."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


def encode(message: dict[str, object]) -> str:
    """Compact JSON, as the exchange sends it."""
    return json.dumps(message, separators=(",", ":"))


def on_channel(
    body: dict[str, object], channel: str, kind: str, moment: datetime | None = None
) -> dict[str, object]:
    """`body` stamped as a message of type `kind` on `channel`; a body with a ``time`` of its
    own (a candle's end, a trade's moment) keeps it."""
    body["channel_name"] = channel
    body["type"] = kind
    body.setdefault("time", iso(moment or now()))
    return body


def error(code: str, message: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"error": code}
    if message is not None:
        body["message"] = message
    return on_channel(body, SYSTEM, "ERROR")


def heartbeat(moment: datetime | None = None) -> dict[str, object]:
    return on_channel({"subscription": SYSTEM}, SYSTEM, "HEARTBEAT", moment)


def connection_closing() -> dict[str, object]:
    """Sent before the exchange ends a session itself (maintenance, shutdown)."""
    return on_channel({}, SYSTEM, "CONNECTION_CLOSING")


def subscriptions(channels: Iterable[dict[str, object]], kind: str) -> dict[str, object]:
    """The session's subscriptions after SUBSCRIBE (`SUBSCRIPTIONS`) or UPDATE_SUBSCRIPTION
    (`SUBSCRIPTION_UPDATED`): every channel it is subscribed to, not only the new ones."""
    return {"channels": list(channels), "type": kind, "time": iso(now())}


def unsubscribed(names: Iterable[str]) -> dict[str, object]:
    return {"channels": list(names), "type": "UNSUBSCRIBED", "time": iso(now())}
