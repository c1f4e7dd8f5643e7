"""The messages the gateway itself sends on a stream, in the exchange's envelope, and the
close codes it ends a session with.

Every message is one JSON object in a text frame with `type` and `time`; the gateway's own
are on the `SYSTEM` channel: `AUTHENTICATED`, and `ERROR` with the REST code in `error`.
"""

from __future__ import annotations

import json
import time

__all__ = [
    "CLOSE_AFTER",
    "GOING_AWAY",
    "INTERNAL_ERROR",
    "MESSAGE_TOO_BIG",
    "NORMAL",
    "POLICY_VIOLATION",
    "SYSTEM",
    "authenticated",
    "error_message",
    "stamp",
]

SYSTEM = "SYSTEM"

# RFC 6455 section 7.4.1.
NORMAL = 1000
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011

# Refusals that end the session, with the close code that follows the ERROR: a key that
# fails cannot be used on, unlike a refused subscription or message.
CLOSE_AFTER = {
    "INVALID_APIKEY": POLICY_VIOLATION,
    "APIKEY_EXPIRED": POLICY_VIOLATION,
    "INVALID_IP_RESTRICTION": POLICY_VIOLATION,
    "CLIENT_IP_BLOCKED": POLICY_VIOLATION,
}


def stamp(now: float | None = None) -> str:
    """The exchange's time format: UTC, milliseconds, `Z`."""
    moment = time.time() if now is None else now
    seconds = int(moment)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{int((moment - seconds) * 1000):03d}Z")


def error_message(code: str, message: str | None = None) -> str:
    """`{"error": CODE, "message": ..., "channel_name": "SYSTEM", "type": "ERROR", ...}`."""
    body: dict[str, object] = {"error": code}
    if message:
        body["message"] = message
    body.update(channel_name=SYSTEM, type="ERROR", time=stamp())
    return json.dumps(body, separators=(",", ":"))


def authenticated() -> str:
    """The answer to a key the gateway accepted."""
    return json.dumps({"channel_name": SYSTEM, "type": "AUTHENTICATED", "time": stamp()},
                      separators=(",", ":"))
