"""`gateway serve`: the data plane on one port, in one process or in N worker processes.

With N > 1, the parent binds the port, forks N workers that share it (each with its own
pools and caches), serves the status port itself, restarts a worker that dies, forwards
SIGHUP (route reload) and drains everyone on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.config.settings import Settings
from gateway.edge.app import CONNECTIONS_KEY, GATEWAY_KEY, build_app
from gateway.edge.connections import ConnectionGuard
from gateway.edge.protocol import GatewayRequestHandler
from gateway.observability.accesslog import configure_logging
from gateway.observability.metrics import enable_multiprocess
from gateway.observability.status import build_status_app
from gateway.tasks import every

__all__ = ["Listening", "bind", "handler_args", "install_uvloop", "listen", "serve"]

log = logging.getLogger(__name__)


def install_uvloop() -> None:
    """uvloop when available: a faster event loop, same semantics."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def handler_args(settings: Settings) -> dict[str, Any]:
    """aiohttp server limits. Its own header limits sit above ours, so that ours answer
    with the contract's 431 and aiohttp's only stop absurd requests."""
    return {
        "max_line_size": max(8190, settings.max_header_size * 2),
        "max_field_size": max(8190, settings.max_header_size * 2),
        "keepalive_timeout": settings.client_timeout,
    }


@dataclass
class Listening:
    """The gateway's app, set up, and its port, open."""

    runner: web.AppRunner
    server: asyncio.Server
    sweeper: asyncio.Task[None]

    def close(self) -> None:
        """Stop accepting; connections already open finish what they are doing."""
        self.server.close()
        self.sweeper.cancel()


async def listen(app: web.Application, sock: socket.socket, settings: Settings) -> Listening:
    """Set up the gateway `app` (its services open) and serve it on `sock` (bound, listening).

    Our own listener instead of aiohttp's SockSite: every connection goes through the guard
    first, which also keeps the state the pipeline remembers per connection, and is served
    by `GatewayRequestHandler` (aiohttp's protocol, its refusals in the contract's JSON).
    """
    args: dict[str, Any] = {**handler_args(settings), "access_log": None}  # ours logs
    guard = ConnectionGuard(settings.max_connections, settings.client_timeout)
    app[CONNECTIONS_KEY] = guard  # before start-up freezes the app
    runner = web.AppRunner(app, handle_signals=False,
                           shutdown_timeout=settings.shutdown_timeout, **args)
    await runner.setup()
    gateway = app[GATEWAY_KEY]
    web_server = runner.server
    assert web_server is not None
    loop = asyncio.get_running_loop()

    def protocol() -> GatewayRequestHandler:
        # What `web_server()` would make, answering aiohttp's own refusals our way.
        return GatewayRequestHandler(gateway.outcomes, web_server, loop=loop, **args)

    server = await loop.create_server(guard.factory(protocol), sock=sock, backlog=4096,
                                      ssl=settings.ssl_context)
    return Listening(runner, server, every(1.0, guard.sweep, "connection-sweep"))


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, inheritable by forked workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


async def _run_until_signal(settings: Settings, sock: socket.socket,
                            status: tuple[str, int] | None) -> None:
    app = build_app(settings)
    listening = await listen(app, sock, settings)
    # Start-up objects (modules, route table, pools) live as long as the process: keep them
    # out of the collector's way, so full collections stay short under load.
    gc.collect()
    gc.freeze()
    status_runner: web.AppRunner | None = None
    if status is not None:
        status_runner = web.AppRunner(build_status_app(lambda: app[GATEWAY_KEY]),
                                      access_log=None)
        await status_runner.setup()
        await web.TCPSite(status_runner, status[0], status[1]).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining: no new connections, finishing requests in flight")
    listening.close()  # stop accepting; requests in flight finish below
    if status_runner is not None:
        await status_runner.cleanup()
    await listening.runner.cleanup()  # waits up to shutdown_timeout, closes pools


def _worker(settings: Settings, sock: socket.socket) -> None:
    # Forked from the supervisor's running loop (on restart): forget it in the child, and its
    # signal handling too. Inherited, a SIGTERM to this worker would be written to the
    # supervisor's wake-up socket and lost, and the worker would outlive the supervisor.
    asyncio.events._set_running_loop(None)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the app installs its reload handler
    install_uvloop()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    asyncio.run(_run_until_signal(settings, sock, None))


def serve(settings: Settings, *, port: int, status_port: int, workers: int = 1,
          host: str = "0.0.0.0") -> int:  # noqa: S104 (a server listens on all interfaces)
    """Run until SIGTERM/SIGINT; returns the exit status."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before we can reload is no exit
    configure_logging(settings)
    install_uvloop()
    sock = bind(host, port)
    scheme = "https" if settings.ssl_context is not None else "http"  # a bad cert stops us here
    print(f"gateway listening on {scheme}://{host}:{port} (status on :{status_port}, "
          f"{workers} worker{'s' if workers > 1 else ''})", flush=True)
    if workers <= 1:
        asyncio.run(_run_until_signal(settings, sock, (host, status_port)))
        return 0
    return _supervise(settings, sock, host, status_port, workers)


def _signal_all(procs: list[multiprocessing.process.BaseProcess], sig: int) -> None:
    for proc in procs:
        if proc.pid and proc.is_alive():
            os.kill(proc.pid, sig)


def _supervise(settings: Settings, sock: socket.socket, host: str, status_port: int,
               workers: int) -> int:
    # Workers write their metrics here; the status port aggregates them.
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    metrics_dir = given or tempfile.mkdtemp(prefix="keygate-metrics-")
    enable_multiprocess(metrics_dir)
    try:
        return _run_workers(settings, sock, host, status_port, workers)
    finally:
        if not given:  # ours: nothing reads it once the workers are gone
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_workers(settings: Settings, sock: socket.socket, host: str, status_port: int,
                 workers: int) -> int:
    context = multiprocessing.get_context("fork")
    procs: list[multiprocessing.process.BaseProcess] = []

    def spawn() -> multiprocessing.process.BaseProcess:
        proc = context.Process(target=_worker, args=(settings, sock), daemon=False)
        proc.start()
        return proc

    procs = [spawn() for _ in range(workers)]

    async def supervise() -> None:
        from gateway.observability.status import build_supervisor_status_app

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, _signal_all, procs, signal.SIGHUP)
        runner = web.AppRunner(build_supervisor_status_app(settings, lambda: procs),
                               access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, status_port).start()
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            for i, proc in enumerate(procs):
                if not proc.is_alive() and not stop.is_set():
                    log.error("worker %s exited with %s; restarting", proc.pid, proc.exitcode)
                    procs[i] = spawn()
        _signal_all(procs, signal.SIGTERM)
        await runner.cleanup()

    asyncio.run(supervise())
    for proc in procs:
        proc.join(settings.shutdown_timeout + 5)
    return 0
