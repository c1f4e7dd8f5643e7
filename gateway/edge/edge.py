"""What every connection of one gateway process shares: the services, the upstream pools, the
connection caps, the deadline sweep, and the answers the gateway port gives itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from gateway.config.tls import upstream_context
from gateway.edge.upstream import UpstreamPools
from gateway.http.client_ip import Address, is_trusted
from gateway.http.errors import answer_bytes
from gateway.services import Gateway
from gateway.streams.gate import StreamGate

__all__ = ["Connection", "Edge", "OwnAnswer"]


class Connection(Protocol):
    """A client connection as the edge counts and sweeps it (`ClientConnection`)."""

    peer: str
    address: Address | None

    def check_deadline(self, now: float) -> None: ...

    def drain(self) -> None: ...

    def abort(self) -> None: ...


class OwnAnswer(Protocol):
    """A request the gateway port answers itself (an `Exchange`)."""

    request_id: str
    finished: bool

    def answer(self, data: bytes, status: int) -> None: ...

log = logging.getLogger(__name__)


class Edge:
    """The data plane of one process, between its listening socket and its services."""

    def __init__(self, services: Gateway, *, is_tls: bool) -> None:
        self.services = services
        self.settings = settings = services.settings
        self.steps = services.steps
        self.outcomes = services.outcomes
        self.loop = asyncio.get_running_loop()
        self.is_tls = is_tls
        self.scheme = "https" if is_tls else "http"
        self.pools = UpstreamPools(settings.upstream_connections,
                                   settings.upstream_connect_timeout,
                                   upstream_context(settings.upstream_ca_file))
        self.connections: set[Connection] = set()
        self._per_ip: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = 0  # connections turned away by a cap
        self.timed_out = 0  # connections cut by a deadline
        self.own_answers: dict[str, Callable[[OwnAnswer], None]] = {
            "/healthz": self._healthz, "/readyz": self._readyz}
        self.streams = StreamGate(self)  # connections upgraded to streams leave `connections`

    # --- connections ---------------------------------------------------------------------

    def admit(self, conn: Connection) -> bool:
        """Count a new connection in, or refuse it: over the process's cap, or over the
        per-address cap (which a trusted proxy, carrying many clients, is not held to)."""
        settings = self.settings
        if len(self.connections) + len(self.streams.sessions) >= settings.max_connections:
            self.refused += 1
            return False
        peer = conn.peer
        held = self._per_ip.get(peer, 0)
        if held >= settings.max_connections_per_ip and not self._is_proxy(conn):
            self.refused += 1
            return False
        self._per_ip[peer] = held + 1
        self.connections.add(conn)
        return True

    def _is_proxy(self, conn: Connection) -> bool:
        trusted = self.settings.trusted_proxies
        return bool(trusted) and conn.address is not None and is_trusted(conn.address[0],
                                                                         trusted)

    def forget(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        left = self._per_ip.get(conn.peer, 1) - 1
        if left > 0:
            self._per_ip[conn.peer] = left
        else:
            self._per_ip.pop(conn.peer, None)

    def sweep(self) -> None:
        """Apply every connection's deadlines (called about every `tick`)."""
        now = self.loop.time()
        for conn in list(self.connections):
            conn.check_deadline(now)

    @property
    def tick(self) -> float:
        """How often `sweep` runs: often enough for the shortest deadline to be kept."""
        settings = self.settings
        shortest = min(settings.client_header_timeout, settings.client_body_timeout,
                       settings.upstream_timeout, settings.client_timeout)
        return float(max(0.05, min(1.0, shortest / 4)))

    def run(self, work: Coroutine[Any, Any, None]) -> None:
        """A request's slow path (a cold key, a rate limit, readiness) as a task."""
        task = self.loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> None:
        """Stop taking requests: idle connections close now, busy ones after their answer,
        and whatever is left after `timeout` is cut."""
        for conn in list(self.connections):
            conn.drain()
        self.streams.drain()
        deadline = self.loop.time() + timeout
        # Connections end in many ways (answered, cut, timed out): looked at, not awaited.
        while ((self.connections or self.streams.sessions)  # noqa: ASYNC110
               and self.loop.time() < deadline):
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        self.streams.close()
        for task in list(self._tasks):
            task.cancel()
        self.pools.close()

    # --- the gateway's own answers -------------------------------------------------------

    def _healthz(self, exchange: OwnAnswer) -> None:
        exchange.answer(_json(200, {"status": "ok"}, exchange.request_id), 200)

    def _readyz(self, exchange: OwnAnswer) -> None:
        async def answer() -> None:
            checks = await self.services.readiness()
            ready = checks["postgres"] and checks["upstream"]
            status = 200 if ready else 503
            if not exchange.finished:
                exchange.answer(_json(status, {"status": "ready" if ready else "unavailable",
                                               "checks": checks}, exchange.request_id), status)

        self.run(answer())


def _json(status: int, body: dict[str, object], request_id: str) -> bytes:
    return answer_bytes(status, json.dumps(body).encode(), [("X-Request-Id", request_id)])
