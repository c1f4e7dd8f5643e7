"""Streams through one gateway process: messages per second, and the latency a message gains.

    python -m bench.streams                    # about 15 s
    python -m bench.streams --seconds 2        # shorter

One `gateway serve` process (pinned to its own CPU with taskset when there are two or more)
serves two stream paths: `/blast` in front of a blaster (an upstream that sends a ticker
message as fast as the connection takes it, so the gateway is what limits) and `/streams` in
front of the sandbox exchange. Throughput: clients subscribe through `/blast` and count what
arrives, beside the same clients straight on the blaster. Latency: clients send UNSUBSCRIBE at
a fixed moderate rate and time the UNSUBSCRIBED answer, through the gateway and straight to the
sandbox, interleaved; the difference of the percentiles is what the gateway adds (both legs).

Stores: GATEWAY_TEST_DATABASE_URL / GATEWAY_TEST_REDIS_URL (a fresh database is made on that
server and dropped after), else embedded ones under a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
TICKER = json.dumps({"ticker_updates": [{
    "instrument": "BTC_EUR", "last_price": "60018.76", "price_change": "738.76",
    "price_change_percentage": "1.25", "high": "61200.0", "low": "58800.0",
    "volume": "6123724.2"}], "channel_name": "MARKET_TICKER", "type": "MARKET_TICKER_UPDATES",
    "time": "2026-01-01T00:00:00.000Z"}, separators=(",", ":"))
UNSUBSCRIBE = json.dumps({"type": "UNSUBSCRIBE", "channels": ["PRICE_TICKS"]})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pinned(cpu: int) -> list[str]:
    """A taskset prefix pinning a child to `cpu`, when there are CPUs to spare."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu)]
    return []


# --- the blaster: an upstream as fast as a connection takes it ----------------------------


class _Blaster(asyncio.Protocol):
    def __init__(self) -> None:
        self.ws = WSConnection(ConnectionType.SERVER)
        self.transport: asyncio.Transport | None = None
        self.frame = b""
        self.is_paused = False
        self.is_sending = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        assert self.transport is not None
        for event in self.ws.events():
            if isinstance(event, Request):
                self.transport.write(self.ws.send(AcceptConnection()))
                self.frame = self.ws.send(TextMessage(TICKER)) * 64
            elif isinstance(event, TextMessage) and not self.is_sending:
                self.is_sending = True
                self.transport.write(self.ws.send(TextMessage(
                    json.dumps({"type": "SUBSCRIPTIONS", "channels": []}))))
                self._blast()
            elif isinstance(event, Ping):
                self.transport.write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.transport.close()

    def _blast(self) -> None:
        transport = self.transport
        while transport is not None and not self.is_paused and not transport.is_closing():
            transport.write(self.frame)

    def pause_writing(self) -> None:
        self.is_paused = True

    def resume_writing(self) -> None:
        self.is_paused = False
        asyncio.get_running_loop().call_soon(self._blast)


def _run_blaster(port: int) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Blaster, "127.0.0.1", port)
        loop.add_signal_handler(signal.SIGTERM, server.close)
        with contextlib.suppress(asyncio.CancelledError):
            await server.serve_forever()

    asyncio.run(serve())


def _run_sandbox(port: int) -> None:
    from aiohttp import web

    from sandbox import build_sandbox_app

    web.run_app(build_sandbox_app(stream_tick=1.0), host="127.0.0.1", port=port,
                print=None, access_log=None)


# --- clients -------------------------------------------------------------------------------


class _Client(asyncio.Protocol):
    """A WebSocket client that counts messages and hands over answers."""

    def __init__(self, host: str, target: str) -> None:
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.host, self.target = host, target
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.count = 0
        self.answers: asyncio.Queue[str] = asyncio.Queue()
        self.is_counting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.ws.send(Request(host=self.host, target=self.target)))

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.opened.set_result(None)
            elif isinstance(event, TextMessage | BytesMessage):
                self.count += 1
                if not self.is_counting and isinstance(event.data, str):
                    self.answers.put_nowait(event.data)
            elif isinstance(event, Ping) and self.transport is not None:
                self.transport.write(self.ws.send(event.response()))

    def send(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(self.ws.send(TextMessage(text)))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def _connect(port: int, path: str) -> _Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: _Client(f"127.0.0.1:{port}", path),
                                             "127.0.0.1", port)
    await asyncio.wait_for(client.opened, 10)
    return client


async def _answer(client: _Client, kind: str) -> None:
    while True:
        text = await asyncio.wait_for(client.answers.get(), 10)
        if f'"type":"{kind}"' in text.replace(" ", ""):
            return


async def throughput(port: int, path: str, clients: int, seconds: float) -> float:
    """Messages per second received by `clients` subscribers, all together."""
    subscribers = [await _connect(port, path) for _ in range(clients)]
    try:
        for client in subscribers:
            client.send(json.dumps({"type": "SUBSCRIBE", "channels": [{"name": "MARKET_TICKER"}]}))
        for client in subscribers:
            await _answer(client, "SUBSCRIPTIONS")
            client.is_counting = True
        await asyncio.sleep(0.5)  # warm-up
        before = sum(c.count for c in subscribers)
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        received = sum(c.count for c in subscribers) - before
        return received / (time.perf_counter() - started)
    finally:
        for client in subscribers:
            client.close()


async def latency(gateway_port: int, sandbox_port: int, token: str, rate: float,
                  seconds: float) -> tuple[list[float], list[float]]:
    """Round trips of UNSUBSCRIBE -> UNSUBSCRIBED (seconds), through the gateway and direct."""
    through = await _connect(gateway_port, "/streams")
    direct = await _connect(sandbox_port, "/streams")
    through.send(json.dumps({"type": "AUTHENTICATE", "api_token": token}))
    await _answer(through, "AUTHENTICATED")
    samples: dict[str, list[float]] = {"through": [], "direct": []}
    try:
        interval = 1.0 / rate
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for name, client in (("through", through), ("direct", direct)):
                started = time.perf_counter()
                client.send(UNSUBSCRIBE)
                await _answer(client, "UNSUBSCRIBED")
                samples[name].append(time.perf_counter() - started)
            await asyncio.sleep(interval)
    finally:
        through.close()
        direct.close()
    return samples["through"], samples["direct"]


# --- the stack -------------------------------------------------------------------------------


@contextlib.contextmanager
def _stores(database_url: str | None = None,
            redis_url: str | None = None) -> Iterator[tuple[str, str]]:
    """A database and a Redis, with their URLs: the ones given (`make bench`'s own, migrated,
    its keys under prefixes of their own), else a fresh database."""
    if database_url and redis_url:
        yield database_url, redis_url
        return
    pg, redis = os.environ.get("GATEWAY_TEST_DATABASE_URL"), os.environ.get(
        "GATEWAY_TEST_REDIS_URL")
    folder = Path(tempfile.mkdtemp(prefix="keygate-bench-streams-"))
    stack = None
    try:
        if not pg or not redis:
            from gateway.ops.embedded import EmbeddedStack

            stack = EmbeddedStack(folder)
            pg, redis = stack.database_url, stack.redis_url
        name = f"keygate_bench_streams_{secrets.token_hex(4)}"
        asyncio.run(_admin(pg, f'CREATE DATABASE "{name}"'))
        database = pg.rsplit("/", 1)[0] + "/" + name + (
            "?" + pg.split("?", 1)[1] if "?" in pg else "")
        try:
            yield database, redis
        finally:
            asyncio.run(_admin(pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        if stack is not None:
            stack.close()
        shutil.rmtree(folder, ignore_errors=True)


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _issue_key(database: str, pepper: str) -> str:
    import asyncpg

    from gateway.keys.accounts import create_user
    from gateway.keys.lifecycle import activate_key, create_key
    from gateway.ops.runtime import migrate_database

    await migrate_database(database)
    conn = await asyncpg.connect(database)
    try:
        user = await create_user(conn, "bench@example.com", "correct horse battery",
                                 verified=True)
        key_id = await create_key(conn, user_id=user, name="bench", permissions=["read"],
                                  allowed_ips=(), actor="bench")
        return str(await activate_key(conn, key_id, pepper=pepper, hash_version=1,
                                      actor="bench"))
    finally:
        await conn.close()


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (our loopback URL)
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def run(seconds: float = 3.0, clients: int = 4, rate: float = 100.0, *,
        quick: bool = False, say: Callable[[str], None] = print,
        database_url: str | None = None, redis_url: str | None = None) -> dict[str, Any]:
    """Start the stack, measure, stop it; the figures (`make bench --parts streams` calls
    this with `quick` and `say`)."""
    if quick:
        seconds = min(seconds, 1.5)
    say(f"streams: {clients} subscribers through one pinned gateway, {seconds:g} s a part")
    before = os.sched_getaffinity(0)
    try:
        if (os.cpu_count() or 1) >= 2:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, {0})  # the load and the upstreams: off the gateway's CPU
        figures = _measure(seconds, clients, rate, database_url, redis_url)
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, before)
    say(f"  {figures['messages_per_second_through_gateway']:,} messages/s through the gateway "
        f"({figures['messages_per_second_direct']:,} direct); added latency p50 "
        f"{figures['added_ms']['p50']} ms, p99 {figures['added_ms']['p99']} ms")
    return figures


def _measure(seconds: float, clients: int, rate: float, database_url: str | None,
             redis_url: str | None) -> dict[str, Any]:
    sandbox_port, blaster_port, gateway_port, status_port = (_free_port() for _ in range(4))
    folder = Path(tempfile.mkdtemp(prefix="keygate-bench-streams-"))
    children: list[subprocess.Popen[bytes]] = []
    try:
        with _stores(database_url, redis_url) as (database, redis):
            pepper = secrets.token_urlsafe(32)
            token = asyncio.run(_issue_key(database, pepper))
            routes = (ROOT / "config" / "routes.yaml").read_text()
            routes = routes.replace("  routes:\n    - path: /streams\n", (
                "  routes:\n    - path: /blast\n"
                f"      upstream: ws://127.0.0.1:{blaster_port}/\n"
                "      channels: {MARKET_TICKER: public}\n    - path: /streams\n"))
            (folder / "routes.yaml").write_text(routes)
            (folder / "gateway.yaml").write_text(
                "stream_messages_per_second: 100000\nlog_format: json\n")
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
                   "GATEWAY_DATABASE_URL": database, "GATEWAY_REDIS_URL": redis,
                   "GATEWAY_SECRET_KEY": secrets.token_urlsafe(32), "GATEWAY_KEY_PEPPER": pepper,
                   "GATEWAY_ROUTES": str(folder / "routes.yaml"),
                   "GATEWAY_CONFIG": str(folder / "gateway.yaml"),
                   "GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{sandbox_port}",
                   "GATEWAY_STREAM_UPSTREAM_URL": f"ws://127.0.0.1:{sandbox_port}/streams"}
            me = [sys.executable, "-m", "bench.streams"]
            log = (folder / "children.log").open("wb")
            children.append(subprocess.Popen([*me, "--sandbox", str(sandbox_port)], cwd=ROOT,
                                             stdout=log, stderr=subprocess.STDOUT))
            children.append(subprocess.Popen([*me, "--blaster", str(blaster_port)], cwd=ROOT,
                                             stdout=log, stderr=subprocess.STDOUT))
            _wait_port(sandbox_port)
            _wait_port(blaster_port)
            children.append(subprocess.Popen(
                [*_pinned(1), sys.executable, "-m", "gateway.cli", "serve", "--host",
                 "127.0.0.1", "--port", str(gateway_port), "--status-port", str(status_port)],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log))
            _wait_http(f"http://127.0.0.1:{gateway_port}/healthz")
            through = asyncio.run(throughput(gateway_port, "/blast", clients, seconds))
            direct = asyncio.run(throughput(blaster_port, "/", clients, seconds))
            via, straight = asyncio.run(latency(gateway_port, sandbox_port, token, rate,
                                                seconds))
    finally:
        for child in reversed(children):
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "pinned": bool(_pinned(1)),
        "clients": clients,
        "messages_per_second_through_gateway": round(through),
        "messages_per_second_direct": round(direct),
        "latency_samples": len(via),
        "rtt_direct_ms": {"p50": round(_percentile(straight, 0.5) * 1000, 3),
                          "p99": round(_percentile(straight, 0.99) * 1000, 3)},
        "rtt_through_gateway_ms": {"p50": round(_percentile(via, 0.5) * 1000, 3),
                                   "p99": round(_percentile(via, 0.99) * 1000, 3)},
        "added_ms": {"p50": round((_percentile(via, 0.5) - _percentile(straight, 0.5)) * 1000,
                                  3),
                     "p99": round((_percentile(via, 0.99) - _percentile(straight, 0.99))
                                  * 1000, 3),
                     "mean": round((statistics.fmean(via) - statistics.fmean(straight)) * 1000,
                                   3)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (4 of them)")
    parser.add_argument("--clients", type=int, default=4, help="subscribers for throughput")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="latency round trips a second, per path")
    parser.add_argument("--blaster", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sandbox", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.blaster:
        _run_blaster(args.blaster)
        return 0
    if args.sandbox:
        _run_sandbox(args.sandbox)
        return 0
    figures = run(args.seconds, args.clients, args.rate)
    print(json.dumps(figures, indent=2))
    through, direct = (figures["messages_per_second_through_gateway"],
                       figures["messages_per_second_direct"])
    added = figures["added_ms"]
    print(f"streams: {through:,} messages/s through one gateway process "
          f"({'pinned to its own CPU' if figures['pinned'] else 'not pinned'}; "
          f"{direct:,}/s straight from the blaster); a message's added latency "
          f"p50 {added['p50']} ms, p99 {added['p99']} ms over {figures['latency_samples']} "
          "round trips (both legs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
