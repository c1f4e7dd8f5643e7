"""One stream session: the client's leg (an asyncio protocol framed by wsproto), the key it
proved, its upstream leg, and everything between them.

Client messages are read whole (up to the size bound), rate-checked, and then handled in
order: AUTHENTICATE is the gateway's own; SUBSCRIBE and UPDATE_SUBSCRIPTION are forwarded
only when every channel in them is declared and allowed; UNSUBSCRIBE is forwarded; the route's
`messages` are forwarded when allowed; anything else is refused. Work that must wait (a key
lookup, connecting the upstream) holds the messages behind it, and the client's reading
pauses meanwhile, so order is kept and nothing piles up.

Upstream messages go to the client as they come, with no task and no copy kept; the
session only reads the upstream's own account of its subscriptions (SUBSCRIPTIONS,
SUBSCRIPTION_UPDATED, UNSUBSCRIBED), which it replays on a new upstream connection when the
client authenticates mid-session (an upstream connection's account is fixed at its upgrade).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import time
from collections.abc import Coroutine
from typing import Any, Protocol, cast

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError

from gateway.config.routes import StreamRoute
from gateway.config.settings import Settings
from gateway.http.client_ip import Address
from gateway.http.errors import GatewayError, KeyInvalid, KeyMissing, StoreUnavailable
from gateway.http.request import RequestView
from gateway.keys.expiry import refusal_for_expiry
from gateway.keys.tokens import TOKEN_PREFIX, parse_token
from gateway.pipeline.context import Services
from gateway.pipeline.headers import upstream_request_head
from gateway.store.base import KeyRecord
from gateway.streams.access import Refusal, StreamAccess, expiry_of, identity_of
from gateway.streams.messages import (
    CLOSE_AFTER,
    GOING_AWAY,
    INTERNAL_ERROR,
    MESSAGE_TOO_BIG,
    NORMAL,
    POLICY_VIOLATION,
    authenticated,
    error_message,
)
from gateway.streams.registry import SessionRegistry
from gateway.streams.upstream import HandshakeFailed, StreamTarget, StreamUpstream, open_upstream


class Host(Protocol):
    """What a session asks of the stream gate that opened it (`StreamGate`)."""

    @property
    def services(self) -> Services: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def registry(self) -> SessionRegistry[StreamSession]: ...

    @property
    def hard_buffer_limit(self) -> int: ...

    def target(self, url: str) -> StreamTarget: ...

    def spawn(self, work: Coroutine[Any, Any, None]) -> None: ...

    def refused(self, session: StreamSession, code: str, kind: str) -> None: ...

    def ended(self, session: StreamSession) -> None: ...

__all__ = ["StreamSession"]

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT = 2.0  # how long a close waits for the peer's close frame
_SUBSCRIBING = frozenset({"SUBSCRIBE", "UPDATE_SUBSCRIPTION"})
_TOKEN_SHAPED = re.compile(r"kg_[a-z2-7]{16}_[a-z2-7]{59}")
_KIND = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
# Close codes a peer may send but nobody may put in a frame (RFC 6455 section 7.4.1).
_UNSENDABLE = frozenset({1005, 1006, 1015})


class StreamSession(asyncio.Protocol):
    """A client's stream, from the 101 to the close."""

    BUSY, UPSTREAM_FULL = 1, 2  # why the client's reading is paused (a bit each)

    def __init__(self, gate: Host, stream: StreamRoute, view: RequestView,
                 address: Address, request_id: str, transport: asyncio.Transport) -> None:
        self.gate = gate
        self.stream = stream
        self.view = view
        self.ip_text = address[1]
        self.request_id = request_id
        self.transport = transport
        self.started = time.perf_counter_ns()
        self.loop = asyncio.get_running_loop()
        self.access = StreamAccess(gate.services, stream, address, view.peer, view.scheme,
                                   request_id)
        self.ws = Connection(ConnectionType.SERVER)
        self.key: KeyRecord | None = None
        self.upstream: StreamUpstream | None = None
        self.subscriptions: list[dict[str, Any]] = []  # as the upstream last listed them
        self.pending: collections.deque[str | bytes] = collections.deque()
        self.is_busy = False
        self.paused = 0
        self.is_closing = False  # our close frame is out
        self.is_ended = False
        self.close_code = 1006  # what the client was sent (1006: nothing)
        self.end_code = ""  # the refusal that ended the session, if one did
        self.messages_in = self.messages_out = 0  # since the gate last counted
        settings = gate.settings
        self._max_size = settings.stream_max_message_size
        self._rate = settings.stream_messages_per_second
        self._tokens = max(1.0, self._rate)
        self._refilled = self.heard = self.checked_at = self.loop.time()
        self._parts: list[str | bytes] = []
        self._size = 0
        self._is_pinged = False
        self._full_since = 0.0  # loop time the client's send buffer filled; 0: it is not
        self._close_by = 0.0
        self._expiry: asyncio.TimerHandle | None = None

    # --- start ---------------------------------------------------------------------------

    def start(self, rest: bytes) -> None:
        """The 101 is out: authenticate from the upgrade's header if it had one, then read."""
        self.transport.set_write_buffer_limits(high=self.gate.settings.stream_send_buffer)
        if self.view.authorization:
            self._run(self._authenticate(list(self.view.authorization)))
        if rest:
            self.data_received(rest)

    # --- the client's leg (asyncio protocol) ---------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.heard = self.loop.time()
        self._is_pinged = False
        try:
            self.ws.receive_data(data)
        except LocalProtocolError:  # bytes after the close handshake: nothing in them
            return
        ws = self.ws
        for event in ws.events():
            if isinstance(event, TextMessage | BytesMessage):
                if not self.is_closing:
                    part: str | bytes | bytearray = event.data
                    self._client_part(bytes(part) if isinstance(part, bytearray) else part,
                                      event.message_finished)
            elif isinstance(event, Ping):
                if not self.is_closing and self._take_token():
                    self._write(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._client_closed(event)
                return
            if self.is_ended:
                return

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def pause_writing(self) -> None:
        # The client reads slower than the upstream sends: hold the upstream, for a while.
        self._full_since = self.loop.time()
        if self.upstream is not None:
            self.upstream.pause_reading(True)

    def resume_writing(self) -> None:
        self._full_since = 0.0
        if self.upstream is not None:
            self.upstream.pause_reading(False)

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.gate.hard_buffer_limit:
            self._cut("the client's send buffer passed its bound")

    def _send(self, text: str) -> None:
        if self.ws.state is ConnectionState.OPEN:
            self._write(self.ws.send(TextMessage(text)))

    def _pause(self, reason: int) -> None:
        if not self.paused and not self.transport.is_closing():
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.transport.is_closing():
                self.transport.resume_reading()

    # --- client messages -----------------------------------------------------------------

    def _client_part(self, data: str | bytes, is_finished: bool) -> None:
        self._size += len(data) if isinstance(data, bytes) or data.isascii() else len(
            data.encode())
        if self._size > self._max_size:
            # SECURITY: refused before it is whole, and none of it was forwarded.
            self._parts = []
            self.end_code = "MESSAGE_TOO_BIG"
            self.gate.refused(self, self.end_code, "MESSAGE")
            self._close(MESSAGE_TOO_BIG, f"a message is at most {self._max_size} bytes")
            return
        if not is_finished:
            self._parts.append(data)
            return
        if self._parts:
            self._parts.append(data)
            data = ("".join(cast(list[str], self._parts)) if isinstance(data, str)
                    else b"".join(cast(list[bytes], self._parts)))
            self._parts = []
        self._size = 0
        if not self._take_token():
            self.refuse("RATELIMIT", f"At most {self._rate:g} messages a second", "MESSAGE")
        elif self.is_busy or self.pending:
            self.pending.append(data)
        else:
            self._handle(data)

    def _take_token(self) -> bool:
        now = self.loop.time()
        self._tokens = min(max(1.0, self._rate), self._tokens + (now - self._refilled)
                           * self._rate)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _handle(self, data: str | bytes) -> None:
        kind = "MESSAGE"
        try:
            if isinstance(data, bytes):
                raise Refusal("MALFORMED_JSON", "Messages are JSON objects in text frames")
            try:
                message = json.loads(data)
            except ValueError:
                raise Refusal("MALFORMED_JSON", "A message is one JSON object") from None
            if not isinstance(message, dict) or not isinstance(message.get("type"), str):
                raise Refusal("MALFORMED_JSON", "A message is a JSON object with a type")
            kind = message["type"]
            if kind == "AUTHENTICATE":
                token = message.get("api_token")
                self._run(self._authenticate(
                    [f"Bearer {token}"] if isinstance(token, str) and token else []))
                return
            if TOKEN_PREFIX in data and any(parse_token(found) is not None
                                            for found in _TOKEN_SHAPED.findall(data)):
                # SECURITY: an API key goes to the gateway alone, in AUTHENTICATE.
                raise Refusal("MALFORMED_JSON", "An API key is sent only in AUTHENTICATE")
            if kind in _SUBSCRIBING:
                self._check_channels(message.get("channels"))
            elif kind != "UNSUBSCRIBE":
                if kind not in self.stream.messages:
                    raise Refusal("MALFORMED_JSON", f"Unknown message type {kind[:40]!r}")
                self.access.require(self.key, self.stream.messages[kind], kind)
        except Refusal as refusal:
            self.refuse(refusal.code, refusal.message, kind)
            return
        self._forward(data)

    def _check_channels(self, channels: object) -> None:
        if not isinstance(channels, list) or not channels:
            raise Refusal("INVALID_SUBSCRIPTION", "channels: a list of {\"name\": ...}")
        for entry in channels:
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str) or name not in self.stream.channels:
                shown = repr(name[:40]) if isinstance(name, str) else "without a name"
                raise Refusal("INVALID_SUBSCRIPTION", f"Unknown channel {shown}")
            self.access.require(self.key, self.stream.channels[name], name)

    def _forward(self, text: str) -> None:
        if self.upstream is not None:
            self.upstream.send_text(text)
            self.messages_in += 1
        else:
            self._run(self._open_and_send(text))

    # --- waiting work, in order ----------------------------------------------------------

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        self.is_busy = True
        self._pause(self.BUSY)
        self.gate.spawn(self._busy(work))

    async def _busy(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stream session %s failed", self.request_id)
            self.end("INTERNAL_SERVER_ERROR", "Internal error", INTERNAL_ERROR)
        finally:
            self.is_busy = False
        if self.is_ended or self.is_closing:
            return
        self._resume(self.BUSY)
        while self.pending and not self.is_busy and not self.is_closing:
            self._handle(self.pending.popleft())

    async def _authenticate(self, authorization: list[str]) -> None:
        try:
            key = await self.access.check_key(authorization)
        except StoreUnavailable as error:  # fail closed, and the session stays as it was
            self.refuse(error.code, error.text, "AUTHENTICATE")
            return
        except Refusal as refusal:
            self.end(refusal.code, refusal.message, kind="AUTHENTICATE")
            return
        except GatewayError as error:
            if isinstance(error, KeyInvalid | KeyMissing):
                services = self.gate.services
                services.spawn(services.guard.record_failure(self.ip_text))
            code = error.code if error.code in CLOSE_AFTER else KeyInvalid.code
            self.end(code, error.text if code == error.code else KeyInvalid.message,
                     kind="AUTHENTICATE")
            return
        if self.is_closing:
            return
        if not self.gate.registry.may_hold(self, key.key_id):
            self.end("RATELIMIT", "Too many stream sessions for this API key",
                     POLICY_VIOLATION, kind="AUTHENTICATE")
            return
        previous, self.key = self.key, key
        self.gate.registry.keyed(self, previous, key)
        self.checked_at = self.loop.time()
        self._schedule_expiry()
        if self.upstream is not None and (previous is None
                                          or identity_of(previous) != identity_of(key)):
            await self._replace_upstream()
        if not self.is_closing:
            self._send(authenticated())

    # --- the upstream's leg ---------------------------------------------------------------

    async def _connect(self) -> StreamUpstream:
        key, settings = self.key, self.gate.settings
        target: StreamTarget = self.gate.target(self.stream.upstream)

        def head(framing: bytes) -> bytes:
            return upstream_request_head(self.view, target.target, target.host_header,
                                         self.ip_text, self.request_id, key, settings, framing)

        leg = await open_upstream(target, head, self, self._max_size,
                                  settings.upstream_connect_timeout)
        if self._full_since:
            leg.pause_reading(True)
        return leg

    async def _connected(self) -> StreamUpstream | None:
        try:
            leg = await self._connect()
        except (OSError, TimeoutError, HandshakeFailed) as exc:
            log.warning("stream upstream %s failed for session %s: %r", self.stream.upstream,
                        self.request_id, exc)
            self.end("SERVICE_UNAVAILABLE", "The exchange's stream could not be reached",
                     INTERNAL_ERROR)
            return None
        if self.is_closing or self.is_ended:
            leg.close(GOING_AWAY)
            return None
        return leg

    async def _open_and_send(self, text: str) -> None:
        leg = await self._connected()
        if leg is not None:
            self.upstream = leg
            leg.send_text(text)
            self.messages_in += 1

    async def _replace_upstream(self) -> None:
        """A new key mid-session: its own upstream connection, the session's subscriptions
        replayed on it (those the new key may have), and the old connection closed."""
        leg = await self._connected()
        if leg is None:
            return
        old, self.upstream = self.upstream, leg
        if old is not None:
            old.close(NORMAL, "the session authenticated again")
        kept: list[dict[str, Any]] = []
        for channel in self.subscriptions:
            name = str(channel.get("name"))
            try:
                self.access.require(self.key, self.stream.channels.get(name), name)
            except Refusal as refusal:
                self.refuse(refusal.code, f"{name} ended: {refusal.message}", "SUBSCRIBE")
                continue
            kept.append(channel)
        self.subscriptions = []
        if kept:
            leg.send_text(json.dumps({"type": "SUBSCRIBE", "channels": kept},
                                     separators=(",", ":")))

    def upstream_message(self, data: str | bytes) -> None:
        if self.is_closing:
            return
        if isinstance(data, str):
            if "SUBSCRI" in data:  # SUBSCRIPTIONS, SUBSCRIPTION_UPDATED, UNSUBSCRIBED
                self._note_subscriptions(data)
            event: TextMessage | BytesMessage = TextMessage(data)
        else:
            event = BytesMessage(data)
        if self.ws.state is ConnectionState.OPEN:
            self._write(self.ws.send(event))
            self.messages_out += 1

    def _note_subscriptions(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind, channels = message.get("type"), message.get("channels")
        if not isinstance(channels, list):
            return
        if kind in ("SUBSCRIPTIONS", "SUBSCRIPTION_UPDATED"):
            self.subscriptions = [c for c in channels
                                  if isinstance(c, dict) and isinstance(c.get("name"), str)]
        elif kind == "UNSUBSCRIBED":
            gone = {name for name in channels if isinstance(name, str)}
            self.subscriptions = [c for c in self.subscriptions if c["name"] not in gone]

    def upstream_closed(self, code: int, reason: str, is_clean: bool) -> None:
        self.upstream = None
        if self.is_closing or self.is_ended:
            return
        if is_clean and code not in _UNSENDABLE:
            # The exchange ended the session itself (it said CONNECTION_CLOSING first):
            # the client gets the same close.
            self._close(code, reason)
            return
        log.warning("stream upstream of session %s ended: %s %s", self.request_id, code,
                    reason)
        self.end("SERVICE_UNAVAILABLE", "The exchange's stream ended",
                 MESSAGE_TOO_BIG if code == MESSAGE_TOO_BIG else INTERNAL_ERROR)

    def upstream_paused(self, is_paused: bool) -> None:
        if is_paused:
            self._pause(self.UPSTREAM_FULL)
        else:
            self._resume(self.UPSTREAM_FULL)

    # --- the key, checked again ----------------------------------------------------------

    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        expires = expiry_of(self.key) if self.key is not None else None
        if expires is not None:
            self._expiry = self.loop.call_later(max(0.0, expires - time.time()),
                                                self._expired)

    def _expired(self) -> None:
        self._expiry = None
        key = self.key
        if not self.is_closing and key is not None:
            refusal = refusal_for_expiry(key, max(time.time(), expiry_of(key) or 0.0))
            self.end("APIKEY_EXPIRED", refusal.text if refusal is not None else None)

    async def recheck(self, *, is_changed: bool) -> None:
        """Check the session's key again, as a new request would be (`is_changed`: the key
        was invalidated, so a store that cannot answer ends the session: fail closed)."""
        key = self.key
        if key is None or self.is_closing:
            return
        self.checked_at = self.loop.time()
        try:
            found = await self.access.check_key(self.access.authorization)
        except StoreUnavailable as error:
            if is_changed:
                self.end(KeyInvalid.code, error.text)
            return
        except Refusal as refusal:
            self.end(refusal.code, refusal.message)
            return
        except GatewayError as error:
            self.end(error.code if error.code in CLOSE_AFTER else KeyInvalid.code)
            return
        if self.key is not key:  # authenticated again meanwhile: that check stands
            return
        if identity_of(found) != identity_of(key):
            self.end(KeyInvalid.code, "The API key changed")
            return
        self.key = found
        self._schedule_expiry()

    # --- endings -------------------------------------------------------------------------

    def refuse(self, code: str, message: str | None, kind: str) -> None:
        """Refuse one message; the session stays open."""
        self._send(error_message(code, message))
        self.gate.refused(self, code, kind if _KIND.fullmatch(kind) else "MESSAGE")

    def end(self, code: str, message: str | None = None, close_code: int | None = None,
            kind: str = "SESSION") -> None:
        """End the session: the ERROR `code` (when given), then the close."""
        if self.is_closing or self.is_ended:
            return
        if code:
            self._send(error_message(code, message))
            self.end_code = code
            self.gate.refused(self, code, kind)
        self._close(close_code or CLOSE_AFTER.get(code, POLICY_VIOLATION),
                    (message or code)[:100])

    def _close(self, code: int, reason: str) -> None:
        if self.is_closing or self.is_ended:
            return
        self.is_closing = True
        self.pending.clear()
        leg, self.upstream = self.upstream, None
        if leg is not None:
            leg.close(NORMAL if code in (MESSAGE_TOO_BIG, POLICY_VIOLATION) else GOING_AWAY)
        if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self.close_code = code
            self._write(self.ws.send(CloseConnection(code, reason)))
        # Read on until the client's close frame comes back, then close: a close frame
        # followed at once by a reset could be lost with the data the client still sends.
        self._close_by = self.loop.time() + _CLOSE_TIMEOUT
        self.paused = 0
        if not self.transport.is_closing():
            self.transport.resume_reading()
            if self.ws.state is ConnectionState.CLOSED:
                self.transport.close()

    def _client_closed(self, event: CloseConnection) -> None:
        ws = self.ws
        if ws.state is ConnectionState.REMOTE_CLOSING:  # the client closes: answer in kind
            self.close_code = event.code
            self.is_closing = True
            self._write(ws.send(event.response()))
        elif ws.state is ConnectionState.OPEN:  # a protocol error wsproto found
            self.end("", None, event.code if event.code not in _UNSENDABLE else 1002)
        leg, self.upstream = self.upstream, None
        if leg is not None:
            leg.close(NORMAL)
        self.transport.close()

    def _cut(self, why: str) -> None:
        """A client that does not read: dropped, not buffered for without end."""
        if self.is_ended:
            return
        log.warning("stream session %s cut: %s", self.request_id, why)
        if not self.end_code:
            self.end_code = "SLOW_CLIENT"
            self.gate.refused(self, "SLOW_CLIENT", "SESSION")
        self.is_closing = True
        self.transport.abort()

    def check(self, now: float) -> None:
        """The gate's sweep: close handshake, slow client, idle peers, the key's age."""
        if self.is_ended:
            return
        settings = self.gate.settings
        if self.is_closing:
            if now >= self._close_by:
                self.transport.abort()
            return
        if self._full_since and now - self._full_since >= settings.stream_send_timeout:
            self._cut("the client read nothing for too long")
            return
        idle = settings.stream_idle_timeout
        if now - self.heard >= idle:
            self.end("", "idle timeout", GOING_AWAY)
            return
        if now - self.heard >= idle / 2 and not self._is_pinged:
            self._is_pinged = True
            self._write(self.ws.send(Ping(b"keygate")))
        leg = self.upstream
        if leg is not None and not self.is_busy:
            if now - leg.heard >= idle:
                leg.abort()
                self.upstream_closed(1006, "the upstream went silent", False)
                return
            if now - leg.heard >= idle / 2:
                leg.ping()
        if (self.key is not None and not self.is_busy
                and now - self.checked_at >= settings.key_cache_ttl):
            self.checked_at = now
            self.gate.spawn(self.recheck(is_changed=False))

    def _finish(self) -> None:
        if self.is_ended:
            return
        self.is_ended = self.is_closing = True
        self.pending.clear()
        if self._expiry is not None:
            self._expiry.cancel()
        leg, self.upstream = self.upstream, None
        if leg is not None:
            leg.abort()
        self.gate.ended(self)
