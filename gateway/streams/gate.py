"""What the edge holds for streams: the upgrade check, the hand-over of a connection from
HTTP to a stream session, the sessions' sweep, and their metrics and access-log lines.

An upgrade on a stream path is checked while its head is parsed (a WebSocket upgrade, not
pipelined, the client address neither blocked nor over its session cap); a refusal is an
ordinary HTTP answer, after which the connection closes. Once llhttp stops at the end of
the upgrade request, the connection leaves the HTTP edge (and its caps and deadlines) and
becomes a `StreamSession`, with the bytes that followed the request.

The edge and its connections are seen through the protocols below: nothing here imports
`gateway.edge`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping, Sized
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config.routes import StreamRoute
from gateway.config.settings import Settings
from gateway.config.tls import upstream_context
from gateway.http.client_ip import Address
from gateway.http.errors import ClientIpBlocked, GatewayError, MalformedRequest
from gateway.http.request import RequestView, request_id_for
from gateway.observability.metrics import Metrics
from gateway.observability.outcomes import Outcome
from gateway.services import Gateway
from gateway.streams.handshake import (
    TooManySessions,
    check_upgrade,
    kept_headers,
    switching_protocols,
)
from gateway.streams.messages import GOING_AWAY
from gateway.streams.registry import SessionRegistry
from gateway.streams.session import StreamSession
from gateway.streams.upstream import StreamTarget

__all__ = ["EdgeSide", "StreamGate", "Upgrade", "UpgradingConnection"]

log = logging.getLogger(__name__)

# The REST status of each code, for the access log's status column.
_STATUS = {
    "INVALID_APIKEY": 401, "APIKEY_EXPIRED": 401, "MISSING_CREDENTIALS": 401,
    "MISSING_PERMISSION": 403, "INVALID_IP_RESTRICTION": 403, "CLIENT_IP_BLOCKED": 403,
    "RATELIMIT": 429, "MESSAGE_TOO_BIG": 413, "INTERNAL_SERVER_ERROR": 500,
    "SERVICE_UNAVAILABLE": 502, "SLOW_CLIENT": 408,
}
_LINES_KEPT = 64  # access-log lines held before a write


@dataclass(frozen=True, slots=True)
class Upgrade:
    """An upgrade request that passed its checks, waiting for the parser to stop."""

    stream: StreamRoute
    view: RequestView
    key: bytes
    address: Address
    request_id: str


class UpgradingConnection(Protocol):
    """A client connection as the gate sees it (`gateway.edge.client.ClientConnection`)."""

    upgrading: Upgrade | None
    peer: str
    address: Address | None

    @property
    def transport(self) -> asyncio.Transport | None: ...

    @property
    def current(self) -> object | None: ...  # the request being answered

    @property
    def queue(self) -> Sized: ...  # requests read ahead of their turn

    @property
    def paused(self) -> int: ...

    def client_address(self, view: RequestView) -> Address: ...

    def check_deadline(self, now: float) -> None: ...

    def drain(self) -> None: ...

    def abort(self) -> None: ...


class EdgeSide(Protocol):
    """What the gate uses of the edge (`gateway.edge.edge.Edge`)."""

    services: Gateway
    settings: Settings
    loop: asyncio.AbstractEventLoop

    def forget(self, conn: UpgradingConnection) -> None: ...


class StreamGate:
    """The streams of one gateway process."""

    def __init__(self, edge: EdgeSide) -> None:
        self.edge = edge
        self.services = services = edge.services
        self.settings = settings = edge.settings
        self.loop = edge.loop
        self.registry: SessionRegistry[StreamSession] = SessionRegistry(
            settings.stream_max_sessions_per_key, settings.stream_max_sessions_per_ip,
            self.spawn)
        # Past what pausing the upstream can explain (its last read, our own messages).
        self.hard_buffer_limit = (2 * settings.stream_send_buffer
                                  + settings.stream_max_message_size + 65536)
        self._targets: dict[str, StreamTarget] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lines: list[Outcome] = []
        self._closed: dict[tuple[str, str], int] = {}
        self._refusals: dict[tuple[str, str], int] = {}
        self._messages: dict[tuple[str, str], int] = {}
        self._open_seen: set[str] = set()
        services.key_watchers.append(self.registry.key_invalidated)
        services.reset_watchers.append(self.registry.keys_reset)

    @property
    def routes(self) -> Mapping[str, StreamRoute]:
        """The stream routes of the route table in force (reloaded with it)."""
        return self.services.table.streams

    @property
    def sessions(self) -> set[StreamSession]:
        return self.registry.sessions

    @property
    def tick(self) -> float:
        """How often `sweep` runs: often enough for the shortest stream deadline."""
        settings = self.settings
        shortest = min(settings.stream_idle_timeout / 2, settings.stream_send_timeout)
        return float(max(0.02, min(0.25, shortest / 4)))

    def target(self, url: str) -> StreamTarget:
        target = self._targets.get(url)
        if target is None:
            tls = (upstream_context(self.settings.upstream_ca_file)
                   if url.startswith("wss:") else None)
            target = self._targets[url] = StreamTarget(url, tls)
        return target

    # --- the upgrade ---------------------------------------------------------------------

    def upgrade(self, conn: UpgradingConnection, view: RequestView,
                is_upgrade: bool) -> GatewayError | None:
        """None when the request on a stream path switches to a stream (`conn.upgrading` is
        set), else the refusal the connection answers (and closes after)."""
        stream = self.routes[view.path]
        try:
            key = check_upgrade(view, is_upgrade)
            if conn.current is not None or conn.queue:
                raise MalformedRequest("A WebSocket upgrade must not be pipelined")
            address = conn.client_address(view)
            guard = self.services.guard
            if guard.has_blocks:
                left = guard.blocked_for(address[1])
                if left:
                    raise ClientIpBlocked(int(left) + 1)
            if not self.registry.may_open(address[1]):
                raise TooManySessions
        except GatewayError as error:
            self._count(self._refusals, (stream.path, error.code))
            return error
        view.headers = kept_headers(view.headers)
        conn.upgrading = Upgrade(stream, view, key, address, request_id_for(view.request_id))
        return None

    def take_over(self, conn: UpgradingConnection, upgrade: Upgrade, rest: bytes) -> None:
        """The parser stopped after the upgrade: the connection becomes a stream session."""
        transport = conn.transport
        self.edge.forget(conn)  # out of the HTTP edge's caps and deadlines
        if transport is None or transport.is_closing():
            return
        session = StreamSession(self, upgrade.stream, upgrade.view, upgrade.address,
                                upgrade.request_id, transport)
        transport.set_protocol(session)
        if conn.paused:
            transport.resume_reading()
        transport.write(switching_protocols(upgrade.key, upgrade.request_id))
        self.registry.add(session)
        session.start(rest)

    # --- what sessions report ------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def refused(self, session: StreamSession, code: str, kind: str) -> None:
        """A message or session refused (the access log gets a line, the metrics a count)."""
        self._count(self._refusals, (session.stream.path, code))
        self._line(session, kind, _STATUS.get(code, 400), code, 0)

    def ended(self, session: StreamSession) -> None:
        self.registry.remove(session)
        path = session.stream.path
        self._count(self._closed, (path, str(session.close_code)))
        self._take_messages(session)
        self._line(session, "GET", 101, session.end_code,
                   (time.perf_counter_ns() - session.started) // 1000)

    def _line(self, session: StreamSession, kind: str, status: int, code: str,
              micros: int) -> None:
        key = session.key
        path = session.stream.path
        self._lines.append(Outcome(
            time.time_ns() // 1_000_000, session.request_id, session.ip_text, kind, path, path,
            status, code, key.key_id if key is not None else None,
            key.account_id if key is not None else None, micros, None))
        if len(self._lines) >= _LINES_KEPT:
            self._write_lines()

    @staticmethod
    def _count(counts: dict[Any, int], labels: Any) -> None:
        counts[labels] = counts.get(labels, 0) + 1

    def _take_messages(self, session: StreamSession) -> None:
        path = session.stream.path
        if session.messages_in:
            self._messages[(path, "in")] = (self._messages.get((path, "in"), 0)
                                            + session.messages_in)
            session.messages_in = 0
        if session.messages_out:
            self._messages[(path, "out")] = (self._messages.get((path, "out"), 0)
                                             + session.messages_out)
            session.messages_out = 0

    # --- the sweep -----------------------------------------------------------------------

    def sweep(self) -> None:
        """Every `tick`: each session's deadlines, then the counts and log lines so far."""
        now = self.loop.time()
        open_by_path: dict[str, int] = {}
        for session in list(self.registry.sessions):
            session.check(now)
            self._take_messages(session)
            path = session.stream.path
            open_by_path[path] = open_by_path.get(path, 0) + 1
        self._flush(open_by_path)

    def _flush(self, open_by_path: dict[str, int]) -> None:
        metrics = Metrics.get()
        for (path, close_code), count in self._closed.items():
            metrics.stream_sessions.labels(path, close_code).inc(count)
        self._closed.clear()
        for (path, code), count in self._refusals.items():
            metrics.stream_refusals.labels(path, code).inc(count)
        self._refusals.clear()
        for (path, direction), count in self._messages.items():
            metrics.stream_messages.labels(path, direction).inc(count)
        self._messages.clear()
        for path in self._open_seen | open_by_path.keys():
            metrics.stream_open.labels(path).set(open_by_path.get(path, 0))
        self._open_seen = set(open_by_path)
        self._write_lines()

    def _write_lines(self) -> None:
        lines, self._lines = self._lines, []
        if lines:
            try:
                self.services.access_log.write(lines)
            except Exception:  # the log must never take a session down
                log.exception("stream access-log lines lost")

    # --- stopping ------------------------------------------------------------------------

    def drain(self) -> None:
        """The gateway is stopping: every session is told (close 1001)."""
        self.registry.close_all(GOING_AWAY, "the gateway is stopping")

    def close(self) -> None:
        """Whatever is left is cut, and the counts are written."""
        self.registry.abort_all()
        for task in list(self._tasks):
            task.cancel()
        services = self.services
        if self.registry.key_invalidated in services.key_watchers:
            services.key_watchers.remove(self.registry.key_invalidated)
        if self.registry.keys_reset in services.reset_watchers:
            services.reset_watchers.remove(self.registry.keys_reset)
        self._flush({})
