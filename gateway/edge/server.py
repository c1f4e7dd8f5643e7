"""`gateway serve`: the data plane on one port, in one process or in N worker processes.

With N > 1, the parent binds one listening socket per worker on the port (SO_REUSEPORT, so
the kernel spreads connections over them), forks N workers (each with its own pools and
caches), serves the status port itself, restarts a worker that dies on the same socket,
forwards SIGHUP (route reload) and drains everyone on SIGTERM/SIGINT.
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

from aiohttp import web

from gateway.config.settings import Settings
from gateway.edge.client import ClientConnection
from gateway.edge.edge import Edge
from gateway.observability.accesslog import configure_logging
from gateway.observability.metrics import enable_multiprocess
from gateway.observability.status import build_status_app
from gateway.services import Gateway
from gateway.tasks import every, stop_task

__all__ = ["Listening", "bind", "install_uvloop", "listen", "serve"]

log = logging.getLogger(__name__)


def install_uvloop() -> None:
    """uvloop when available: a faster event loop, same semantics."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@dataclass
class Listening:
    """A gateway process's services, open, and its port, served."""

    services: Gateway
    edge: Edge
    server: asyncio.AbstractServer
    tasks: list[asyncio.Task[None]]

    def stop_accepting(self) -> None:
        self.server.close()

    async def aclose(self) -> None:
        """Stop accepting, finish the requests in flight (up to `shutdown_timeout`), then
        close the services."""
        self.stop_accepting()
        await self.edge.drain(self.services.settings.shutdown_timeout)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)
        await asyncio.gather(*map(stop_task, self.tasks))
        self.services.sync_metrics()  # the last requests of a worker that stops
        await self.services.aclose()


async def listen(settings: Settings, sock: socket.socket, *,
                 start_serving: bool = True) -> Listening:
    """Open the gateway's services and serve the data plane on `sock` (bound, listening).

    With `start_serving` False, connections wait in the socket's queue until
    `listening.server.start_serving()`: the status port can come up first."""
    services = await Gateway.open(settings)
    try:
        ssl_context = settings.ssl_context
        edge = Edge(services, is_tls=ssl_context is not None)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: ClientConnection(edge), sock=sock,
                                          backlog=4096, ssl=ssl_context,
                                          start_serving=start_serving)
    except BaseException:
        await services.aclose()
        raise
    tasks = [
        every(edge.tick, edge.sweep, "connection-sweep"),
        every(edge.streams.tick, edge.streams.sweep, "stream-sweep"),
        every(1.0, services.sync_metrics, "metrics-sync"),
        # The route file, reloaded when it changes on disk.
        every(1.0, services.reload_routes_if_changed, "routes-watch"),
    ]
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, services.reload_routes)
    return Listening(services, edge, server, tasks)


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket (inheritable by forked workers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


def bind_workers(host: str, port: int, workers: int) -> list[socket.socket]:
    """One listening socket per worker on the same port. The port is first taken alone, so
    a port that another server (or another gateway) holds is refused, not shared."""
    bind(host, port).close()
    return [bind(host, port, reuse_port=True) for _ in range(workers)]


async def _run_until_signal(settings: Settings, sock: socket.socket,
                            status: tuple[str, int] | None) -> None:
    listening = await listen(settings, sock, start_serving=False)
    # Start-up objects (modules, route table, pools) live as long as the process: keep them
    # out of the collector's way, so full collections stay short under load.
    gc.collect()
    gc.freeze()
    status_runner: web.AppRunner | None = None
    if status is not None:
        status_runner = web.AppRunner(build_status_app(lambda: listening.services),
                                      access_log=None)
        await status_runner.setup()
        await web.TCPSite(status_runner, status[0], status[1]).start()
    # Answering on the gateway port says the process is up: its status port is, too.
    await listening.server.start_serving()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining: no new connections, finishing requests in flight")
    listening.stop_accepting()
    if status_runner is not None:
        await status_runner.cleanup()
    await listening.aclose()


def _worker(settings: Settings, socks: list[socket.socket], index: int) -> None:
    # Forked from the supervisor's running loop (on restart): forget it in the child, and its
    # signal handling too. Inherited, a SIGTERM to this worker would be written to the
    # supervisor's wake-up socket and lost, and the worker would outlive the supervisor.
    asyncio.events._set_running_loop(None)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the app installs its reload handler
    install_uvloop()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    for other, sock in enumerate(socks):
        if other != index:
            sock.close()  # the kernel then queues this worker's connections on its own
    asyncio.run(_run_until_signal(settings, socks[index], None))


def serve(settings: Settings, *, port: int, status_port: int, workers: int = 1,
          host: str = "0.0.0.0") -> int:  # noqa: S104 (a server listens on all interfaces)
    """Run until SIGTERM/SIGINT; returns the exit status."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before we can reload is no exit
    configure_logging(settings)
    install_uvloop()
    socks = [bind(host, port)] if workers <= 1 else bind_workers(host, port, workers)
    scheme = "https" if settings.ssl_context is not None else "http"  # a bad cert stops us here
    print(f"gateway listening on {scheme}://{host}:{port} (status on :{status_port}, "
          f"{workers} worker{'s' if workers > 1 else ''})", flush=True)
    if workers <= 1:
        asyncio.run(_run_until_signal(settings, socks[0], (host, status_port)))
        return 0
    return _supervise(settings, socks, host, status_port)


def _signal_all(procs: list[multiprocessing.process.BaseProcess], sig: int) -> None:
    for proc in procs:
        if proc.pid and proc.is_alive():
            os.kill(proc.pid, sig)


def _supervise(settings: Settings, socks: list[socket.socket], host: str,
               status_port: int) -> int:
    # Workers write their metrics here; the status port aggregates them.
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    metrics_dir = given or tempfile.mkdtemp(prefix="keygate-metrics-")
    enable_multiprocess(metrics_dir)
    try:
        return _run_workers(settings, socks, host, status_port)
    finally:
        if not given:  # ours: nothing reads it once the workers are gone
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_workers(settings: Settings, socks: list[socket.socket], host: str,
                 status_port: int) -> int:
    context = multiprocessing.get_context("fork")

    def spawn(index: int) -> multiprocessing.process.BaseProcess:
        # Worker `index` serves socket `index`; a replacement takes over the same one.
        proc = context.Process(target=_worker, args=(settings, socks, index), daemon=False)
        proc.start()
        return proc

    procs = [spawn(index) for index in range(len(socks))]

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
                    procs[i] = spawn(i)
        _signal_all(procs, signal.SIGTERM)
        await runner.cleanup()

    asyncio.run(supervise())
    for proc in procs:
        proc.join(settings.shutdown_timeout + 5)
    return 0
