"""The edge's protocols driven by hand: fake transports on both legs, no sockets.

`EdgeHarness` builds a real `Edge` over the pipeline's in-process services
(`tests.support.pipeline.FakeServices`) and opens client connections on `FakeTransport`s; the
upstream pool is the real `UpstreamPool`, filled with real `UpstreamConnection`s on fake
transports, so a test writes the upstream's answer bytes itself and reads what each leg was
sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, cast

from gateway.config.settings import Settings
from gateway.edge.client import ClientConnection
from gateway.edge.edge import Edge
from gateway.edge.upstream import UpstreamConnection, UpstreamPool
from gateway.observability.outcomes import Outcome, Outcomes
from gateway.pipeline.runner import steps_for
from tests.support.pipeline import FakeServices

__all__ = ["EDGE_ROUTES", "ORIGIN", "EdgeHarness", "FakeTransport", "error_code", "split_answers"]

ORIGIN = "http://127.0.0.1:9"
EDGE_ROUTES = f"""
permissions: {{read: Read, trade: Trade}}
upstreams: {{default: "{ORIGIN}"}}
routes:
  - {{path: /public/v1/time, methods: [GET, HEAD], public: true}}
  - {{path: /public/v1/fees, methods: [GET], public: true}}
  - {{path: /public/v1/orders, methods: [POST, DELETE], public: true}}
"""


class FakeTransport:
    """What the protocols use of an asyncio transport, recorded."""

    def __init__(self, peer: tuple[str, int] = ("198.51.100.7", 40000)) -> None:
        self.peer = peer
        self.written = bytearray()
        self.closed = False  # closed, or half-closed by the gateway (`write_eof`)
        self.eof_written = False
        self.fully_closed = False  # `close()` itself
        self.aborted = False
        self.reading = True
        self.pauses = 0
        self.resumes = 0

    def write(self, data: bytes) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True
        self.resumes += 1

    def close(self) -> None:
        self.closed = self.fully_closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """The gateway's side ends (it then only drops what the client still sends)."""
        self.eof_written = self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer}.get(name, default)

    def take(self) -> bytes:
        data, self.written = bytes(self.written), bytearray()
        return data


class EdgeServices(FakeServices):
    """The pipeline's services plus what the edge itself reads."""

    def __init__(self, settings: Settings, routes: str) -> None:
        super().__init__(rate_limits=False, routes=routes)
        self.settings = settings
        self.steps = steps_for(rate_limits=False)
        self.seen: list[Outcome] = []
        self.outcomes = Outcomes([self.seen.extend])


class EdgeHarness:
    """A real Edge, its pool for `ORIGIN`, and connections on fake transports."""

    def __init__(self, routes: str = EDGE_ROUTES, **settings: Any) -> None:
        base = Settings(key_pepper="unit", client_header_timeout=10.0, client_body_timeout=30.0,
                        client_timeout=60.0, upstream_timeout=30.0, upstream_total_timeout=120.0)
        self.services = EdgeServices(base.replace(**settings), routes)
        self.edge = Edge(cast(Any, self.services), is_tls=False)
        self.pool: UpstreamPool = self.edge.pools.get(ORIGIN)
        self.upstreams: list[tuple[UpstreamConnection, FakeTransport]] = []
        self._fresh: list[UpstreamConnection] = []
        # New connections come from the test, not from the network.
        self.pool._connect = self._connect  # type: ignore[method-assign]

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.edge.loop

    def client(self, peer: tuple[str, int] = ("198.51.100.7", 40000)
               ) -> tuple[ClientConnection, FakeTransport]:
        conn = ClientConnection(self.edge)
        transport = FakeTransport(peer)
        conn.connection_made(cast(Any, transport))
        return conn, transport

    def upstream(self, *, idle: bool = True) -> tuple[UpstreamConnection, FakeTransport]:
        """A connection to the upstream: idle in the pool, or handed to the next connect."""
        conn = UpstreamConnection(self.pool)
        transport = FakeTransport(("127.0.0.1", 9))
        conn.connection_made(cast(Any, transport))
        self.pool._open.add(conn)
        self.upstreams.append((conn, transport))
        if idle:
            self.pool.release(conn)
        else:
            self._fresh.append(conn)
        return conn, transport

    def _connect(self, handed: Callable[[UpstreamConnection | BaseException], None]) -> None:
        if self._fresh:
            handed(self._fresh.pop(0))
        else:
            handed(ConnectionRefusedError("no upstream connection prepared"))


def split_answers(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Answers framed by Content-Length (or none), as (status, headers, body)."""
    out = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, data
        line, *fields = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, v in (f.split(": ", 1) for f in fields)}
        length = int(headers.get("content-length", "0"))
        body, data = data[:length], data[length:]
        out.append((int(line.split()[1]), headers, body))
    return out


def error_code(body: bytes) -> str:
    return str(json.loads(body)["error"])
