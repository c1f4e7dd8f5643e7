"""The bare pass-through proxy: the gateway's own forwarding code with no checks in front.

It is what the gateway would be without its pipeline: the same aiohttp server settings, the
same upstream session (`create_upstream_session`), the same `forward` step (header rebuilding,
streaming both ways), and the same worker model (the parent binds the port, N forked workers
share it). No route table, key, allowlist, permission, rate limit, metrics or request-id check.

    python -m bench.bare_proxy --port 8090 --upstream http://127.0.0.1:9000 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from aiohttp import web

from bench.procs import ROOT, Child, Server, free_port, wait_http
from gateway.config.routes import RateLimit, Route
from gateway.config.settings import Settings
from gateway.edge.server import handler_args, install_uvloop
from gateway.http.client_ip import client_ip
from gateway.pipeline.context import RequestContext
from gateway.pipeline.forward import create_upstream_session, forward

__all__ = ["BareProxy", "BareProxyProcess", "build_bare_app", "main"]


class BareProxy:
    """What `forward` reads from the gateway: its settings and its upstream session."""

    __slots__ = ("route", "session", "settings")

    def __init__(self, settings: Settings, upstream: str) -> None:
        self.settings = settings
        self.session = create_upstream_session(settings.upstream_connections,
                                               settings.upstream_connect_timeout)
        # One fixed route: every path goes to the upstream, as it came.
        self.route = Route(pattern="/{tail}", methods=frozenset(), permission=None,
                           is_public=True, upstream=upstream.rstrip("/"), timeout=None,
                           rate_limit=RateLimit(1, 1.0, "ip", "bare"))


BARE_KEY: web.AppKey[BareProxy] = web.AppKey("bare", BareProxy)


async def handle(request: web.Request) -> web.StreamResponse:
    proxy = request.app[BARE_KEY]
    ctx = RequestContext(request, os.urandom(12).hex(), request.raw_path.partition("?")[0],
                         *client_ip(request.remote, (), ()), proxy)  # type: ignore[arg-type]
    ctx.route = proxy.route
    return await forward(ctx)


def build_bare_app(settings: Settings, upstream: str) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_size)

    async def session(app: web.Application) -> AsyncIterator[None]:
        proxy = BareProxy(settings, upstream)
        app[BARE_KEY] = proxy
        yield
        await proxy.session.close()

    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _serve(settings: Settings, upstream: str, sock: socket.socket) -> None:
    # As gateway.server does: no access log, the same server limits.
    runner = web.AppRunner(build_bare_app(settings, upstream), handle_signals=False,
                           access_log=None, **handler_args(settings))
    await runner.setup()
    await web.SockSite(runner, sock).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def _worker(settings: Settings, upstream: str, sock: socket.socket) -> None:
    install_uvloop()
    asyncio.run(_serve(settings, upstream, sock))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_proxy", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="origin URL, e.g. http://127.0.0.1:9000")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    settings = Settings(upstream_url=args.upstream)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(4096)
    sock.set_inheritable(True)
    print(f"bare proxy on http://{args.host}:{args.port} -> {args.upstream} "
          f"({args.workers} worker(s))", flush=True)
    if args.workers <= 1:
        _worker(settings, args.upstream, sock)
        return 0
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_worker, args=(settings, args.upstream, sock))
             for _ in range(args.workers)]
    for proc in procs:
        proc.start()

    def stop(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for proc in procs:
        proc.join()
    return 0


class BareProxyProcess(Server):
    """This module's `main` as a child process of the benchmark."""

    def __init__(self, name: str, workdir: Path, upstream_url: str, workers: int, *,
                 launcher: Sequence[str] = ()) -> None:
        """`launcher`: a command the interpreter runs under (a profiler), if any."""
        self.port = free_port()
        self.child = Child(name, [*launcher, sys.executable, "-m", "bench.bare_proxy", "--port",
                                  str(self.port), "--upstream", upstream_url,
                                  "--workers", str(workers)],
                           workdir / f"{name}.log", cwd=ROOT)
        wait_http(f"{self.url}/", timeout=180 if launcher else 30, child=self.child)


if __name__ == "__main__":
    raise SystemExit(main())
