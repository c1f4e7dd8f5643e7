"""The edge's request path in one process, on fake transports: what callgrind counts.

A real `Gateway` (services open on the benchmark's PostgreSQL and Redis, settings as
`gateway serve` reads them from the environment) and a real `Edge`, with one
`ClientConnection` and one pooled `UpstreamConnection` on transports that only keep what is
written to them. Each request is the bytes wrk sends, fed to the client connection's
`data_received`; the upstream's answer (an nginx answer, fixed) is fed to the upstream
connection's. Between the two, everything the gateway does for a request runs: parsing, the
pipeline's steps, the upstream head, the answer's head, the outcome (metrics and the JSON
access log, in their batches). No socket, no event loop turn, no other process: the count of
instructions per request does not depend on the machine's load.

Cases: `warm` (rate limits off, the key in the process cache): every request is answered
within the two calls, and a request that is not is an error, since the count would then
measure something else. `limits` (rate limits on): each request waits for its Redis round
trip, so the event loop runs (and its count includes the loop's and the Redis client's work).

Driven over a pipe (see bench/instructions.py): it prints `ready` when warm, then answers
`run N` (N requests, then `done N`) until `quit`. Also usable alone:

    python -m bench.edge_driver --case warm --token TOKEN --requests 1000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from gateway.config.settings import load_settings
from gateway.edge.client import ClientConnection
from gateway.edge.edge import Edge
from gateway.edge.server import install_uvloop
from gateway.edge.upstream import UpstreamConnection
from gateway.observability.accesslog import configure_logging
from gateway.services import Gateway

__all__ = ["ANSWER", "EdgeDriver", "FakeTransport", "main", "request_bytes"]

# What the benchmark's upstream nginx answers (its Date frozen).
ANSWER = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
          b"Content-Type: application/json\r\nContent-Length: 11\r\nConnection: keep-alive\r\n"
          b"\r\n{\"ok\":true}")
_WAIT_LIMIT = 10.0  # seconds a request may wait for its steps (a lookup, a rate limit)


def request_bytes(token: str, path: str = "/public/v1/account/balances") -> bytes:
    """A request as wrk sends it."""
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
            f"Authorization: Bearer {token}\r\n\r\n").encode()


class FakeTransport:
    """A transport that keeps what is written to it; reading is never paused for real.
    `waiter`, when set, is resolved by the next write."""

    __slots__ = ("closed", "peer", "waiter", "written")

    def __init__(self, peer: tuple[str, int] | None = None) -> None:
        self.peer = peer
        self.written: list[bytes] = []
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written.append(data)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class EdgeDriver:
    """One client connection and one upstream connection of a real edge, fed by hand."""

    def __init__(self, services: Gateway, request: bytes) -> None:
        self.services = services
        self.request = request
        self.edge = Edge(services, is_tls=False)
        self.client_side = FakeTransport(("127.0.0.1", 40000))
        self.client = ClientConnection(self.edge)
        self.client.connection_made(self.client_side)  # type: ignore[arg-type]
        self.upstream_side = FakeTransport()
        self.last_forwarded = b""  # the last request head the upstream was sent
        self.upstreams: list[UpstreamConnection] = []
        for origin in sorted(set(services.table.upstreams.values())):
            pool = self.edge.pools.get(origin)
            conn = UpstreamConnection(pool)
            conn.connection_made(self.upstream_side)  # type: ignore[arg-type]
            pool.release(conn)  # idle: the first request takes it, and gives it back
            self.upstreams.append(conn)
        if len(self.upstreams) != 1:
            raise RuntimeError(f"the route table names {len(self.upstreams)} upstreams; "
                               "the driver feeds exactly one")

    def run_at_once(self, requests: int) -> None:
        """`requests` requests, each answered within its two calls (the warm path)."""
        feed, answer, sent = (self.client.data_received, self.upstreams[0].data_received,
                              self.upstream_side.written)
        request = self.request
        for _ in range(requests):
            feed(request)
            answer(ANSWER)
        self._check(requests, len(sent))

    async def run_waiting(self, requests: int) -> None:
        """`requests` requests, each given the event loop until its head goes upstream or an
        answer comes without it (one wake-up per wait: no polling, whose count would follow
        Redis's speed)."""
        feed, answer, upstream = (self.client.data_received, self.upstreams[0].data_received,
                                  self.upstream_side)
        sent, request, loop = upstream.written, self.request, asyncio.get_running_loop()
        client, answers = self.client_side, self.client_side.written
        for _ in range(requests):
            before, answered = len(sent), len(answers)
            # Woken by the request's head going upstream, or by an answer without it.
            waiter = upstream.waiter = client.waiter = loop.create_future()
            feed(request)
            if len(sent) == before and len(answers) == answered:
                late = loop.call_later(_WAIT_LIMIT, _give_up, waiter)
                await waiter
                late.cancel()
            upstream.waiter = client.waiter = None
            answer(ANSWER)
        self._check(requests, len(sent))

    def _check(self, requests: int, forwarded: int) -> None:
        """Every request forwarded once and answered 200, on a connection still open."""
        answers = self.client_side.written
        ok = sum(1 for data in answers if data.startswith(b"HTTP/1.1 200 "))
        if forwarded != requests or ok != requests or len(answers) != requests or (
                self.client_side.closed or self.upstream_side.closed):
            raise RuntimeError(f"{requests} requests: {forwarded} forwarded, {ok} answered 200 "
                               f"of {len(answers)} answers (client closed: "
                               f"{self.client_side.closed}, upstream closed: "
                               f"{self.upstream_side.closed}):\n{self._answers_text()}")
        if self.upstream_side.written:
            self.last_forwarded = self.upstream_side.written[-1]
        answers.clear()
        self.upstream_side.written.clear()

    def _answers_text(self) -> str:
        return b"\n---\n".join(self.client_side.written[-2:]).decode("latin-1")[:2000]


def _give_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(RuntimeError(
            f"a request was not forwarded within {_WAIT_LIMIT:.0f} s"))


async def _serve(case: str, token: str, warmup: int, control: TextIO,
                 commands: TextIO) -> None:
    # The cache keeps the key for the whole run: under valgrind, requests are slow.
    settings = load_settings().replace(key_cache_ttl=86400.0)
    configure_logging(settings)
    if settings.rate_limits != (case == "limits"):
        raise RuntimeError(f"case {case} needs GATEWAY_RATE_LIMITS="
                           f"{'on' if case == 'limits' else 'off'}")
    services = await Gateway.open(settings)
    try:
        driver = EdgeDriver(services, request_bytes(token))
        await driver.run_waiting(warmup)  # the first looks the key up; the rest are warm
        if case == "warm":
            driver.run_at_once(warmup)
        gc.collect()
        gc.freeze()  # as `gateway serve` does once started
        print("ready", file=control, flush=True)
        for line in commands:
            words = line.split()
            if not words or words[0] == "quit":
                break
            requests = int(words[1])
            if case == "warm":
                driver.run_at_once(requests)
            else:
                await driver.run_waiting(requests)
            print(f"done {requests}", file=control, flush=True)
    finally:
        await services.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge_driver",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=("warm", "limits"), default="warm")
    parser.add_argument("--token", required=True, help="an active key with `read`")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--requests", type=int,
                        help="serve this many and exit, instead of reading commands")
    parser.add_argument("--log", default=os.devnull,
                        help="where the access log goes (stdout carries the replies)")
    args = parser.parse_args(argv)
    # Replies on the original stdout; fd 1 (the access log's stream) goes to `--log`.
    control = os.fdopen(os.dup(1), "w")
    log_fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.close(log_fd)
    commands: TextIO = sys.stdin
    if args.requests is not None:
        import io

        commands = io.StringIO(f"run {args.requests}\nquit\n")
    install_uvloop()
    try:
        asyncio.run(_serve(args.case, args.token, args.warmup, control, commands))
    except RuntimeError as exc:
        print(f"edge driver: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
