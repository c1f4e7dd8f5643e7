"""Connection guard: caps open connections and cuts clients that are slow to send a request.

aiohttp has no deadline for receiving request headers, so a client trickling bytes
(slowloris) could hold a connection forever. Each connection gets a deadline when it opens
and after each request: a request must have arrived by then, or the connection is closed.
While a request is being handled the deadline does not apply (uploads may be long).
Each connection also carries the pipeline's `ConnectionState` (what it remembers between
requests on one connection).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from gateway.pipeline.context import ConnectionState

__all__ = ["ConnectionGuard", "GuardedProtocol"]

log = logging.getLogger(__name__)


class ConnectionGuard:
    """Shared by every connection of one listening socket."""

    def __init__(self, max_connections: int, request_timeout: float) -> None:
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.by_transport: dict[asyncio.BaseTransport, GuardedProtocol] = {}
        self.refused = 0
        self.timed_out = 0

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory wrapping aiohttp's."""
        return lambda: GuardedProtocol(self, inner())

    def request_started(self, transport: asyncio.BaseTransport | None) -> GuardedProtocol | None:
        """Suspend the connection's deadline until its `request_finished`; returns the
        connection (None for an unknown one)."""
        guarded = self.by_transport.get(transport) if transport is not None else None
        if guarded is not None:
            guarded.busy += 1
        return guarded

    def sweep(self) -> None:
        """Close connections idle past their deadline (called about once a second)."""
        now = asyncio.get_running_loop().time()
        for guarded in list(self.by_transport.values()):
            if not guarded.busy and guarded.deadline <= now:
                guarded.expire()


class GuardedProtocol(asyncio.Protocol):
    """Delegates everything to aiohttp's protocol, adding the cap and the deadline."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self.busy = 0
        self.deadline = 0.0
        self.state = ConnectionState()
        # The hot callbacks go straight to aiohttp's protocol (the loop looks them up once).
        self.data_received = inner.data_received  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        if len(self._guard.by_transport) >= self._guard.max_connections:
            self._guard.refused += 1
            self._transport.abort()  # over the cap: refuse before aiohttp allocates anything
            return
        self._guard.by_transport[transport] = self
        self._inner.connection_made(transport)
        self.deadline = asyncio.get_running_loop().time() + self._guard.request_timeout

    def request_finished(self) -> None:
        self.busy -= 1
        if not self.busy:
            self.deadline = asyncio.get_running_loop().time() + self._guard.request_timeout

    def expire(self) -> None:
        if not self.busy and self._transport is not None:
            self._guard.timed_out += 1
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None and self._guard.by_transport.pop(
                self._transport, None) is not None:
            self._inner.connection_lost(exc)
