"""One stream session: whom it acts for, what it subscribed to, and its outbound queue.

Messages are queued and written by one writer task, in order, so the ledger (which reports
changes synchronously) and the tick loop never wait on a slow client. A client that falls
`QUEUE_LIMIT` messages behind is disconnected, as exchanges do with slow consumers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import WSCloseCode, web

from ..headers import ACCOUNT_HEADER, KEY_ID_HEADER, PERMISSIONS_HEADER
from ..recording import StreamRecord
from .channels import Subscription
from .market_feed import Part
from .messages import connection_closing, encode

__all__ = ["QUEUE_LIMIT", "Identity", "StreamSession"]

QUEUE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Identity:
    """What the gateway said about the session on its upgrade request.

    `permissions` is None when the gateway sent no permissions header: then, as on REST, the
    sandbox restricts nothing.
    """

    account_id: str | None
    key_id: str | None
    permissions: frozenset[str] | None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Identity:
        # The sandbox is not the gateway: it checks no key, it trusts these headers.
        account_id = headers.get(ACCOUNT_HEADER, "").strip() or None
        key_id = headers.get(KEY_ID_HEADER, "").strip() or None
        listed = headers.get(PERMISSIONS_HEADER)
        permissions = (
            None
            if listed is None
            else frozenset(part.strip().lower() for part in listed.split(",") if part.strip())
        )
        return cls(account_id, key_id, permissions)

    def may(self, permission: str) -> bool:
        return self.permissions is None or permission in self.permissions


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str
    is_graceful: bool  # announce it with CONNECTION_CLOSING first


_END = object()  # the handler is done: the writer stops


class StreamSession:
    """A connected client: its identity, subscriptions (name -> options) and their parts."""

    __slots__ = (
        "_is_open",
        "_queue",
        "_transport",
        "_ws",
        "identity",
        "parts",
        "record",
        "subscriptions",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        identity: Identity,
        record: StreamRecord,
    ) -> None:
        self._ws = ws
        self._transport = transport
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._is_open = True
        self.identity = identity
        self.record = record
        self.subscriptions: dict[str, Subscription] = {}
        self.parts: dict[str, tuple[Part, ...]] = {}

    @property
    def is_open(self) -> bool:
        return self._is_open

    def subscribe(self, sub: Subscription, parts: tuple[Part, ...]) -> None:
        self.subscriptions[sub.name] = sub
        self.parts[sub.name] = parts

    def unsubscribe(self, name: str) -> None:
        self.subscriptions.pop(name, None)
        self.parts.pop(name, None)

    def send(self, message: dict[str, object]) -> None:
        self.send_text(encode(message))

    def send_text(self, text: str) -> None:
        """Queue an encoded message; dropped once the session is closing."""
        if not self._is_open:
            return
        if self._queue.qsize() >= QUEUE_LIMIT:
            self._drain()
            self.close(WSCloseCode.POLICY_VIOLATION, "too slow", is_graceful=False)
            return
        self._queue.put_nowait(text)

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    def close(self, code: int, reason: str, *, is_graceful: bool = True) -> None:
        """Close after the messages already queued; `is_graceful` announces it first."""
        if self._is_open:
            self._is_open = False
            self._queue.put_nowait(_Close(code, reason, is_graceful))

    def abort(self) -> None:
        """Drop the connection at once, with no close frame: an upstream that vanishes."""
        self._is_open = False
        self._drain()
        if self._transport is not None:
            self._transport.abort()

    def finish(self) -> None:
        """The client is gone or the handler is done: stop the writer."""
        self._is_open = False
        self._queue.put_nowait(_END)

    async def run_writer(self) -> None:
        """Write queued messages until a close, `finish`, or the connection's end."""
        ws = self._ws
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, str):
                    await ws.send_str(item)
                elif isinstance(item, _Close):
                    if item.is_graceful:
                        await ws.send_str(encode(connection_closing()))
                    await ws.close(code=item.code, message=item.reason.encode())
                    return
                else:
                    return
        except ConnectionError:  # the peer went away mid-write
            return
