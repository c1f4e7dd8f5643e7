"""`gateway dev`: the whole stack in one process, on embedded defaults.

Embedded PostgreSQL and Redis (unless URLs are set), migrations, the sandbox exchange as
upstream (unless one is configured), the dev mail sink (unless SMTP is configured), the
gateway, its status port and the admin UI. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.config.settings import Settings
from gateway.edge.server import Listening, bind, install_uvloop, listen
from gateway.observability.status import build_status_app
from gateway.ops.runtime import migrate_database, resolved
from sandbox import build_sandbox_app

__all__ = ["run_dev"]

Cleanup = Callable[[], Awaitable[None]]


async def _serve(app: web.Application, port: int, **kwargs: object) -> Cleanup:
    runner = web.AppRunner(app, handle_signals=False, **kwargs)  # type: ignore[arg-type]
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner.cleanup


async def _serve_gateway(port: int, settings: Settings) -> tuple[Listening, Cleanup]:
    """As `gateway serve` serves it: the same edge, limits and error answers."""
    listening = await listen(settings, bind("127.0.0.1", port))
    return listening, listening.aclose


async def _run(settings: Settings, port: int, admin_port: int, status_port: int,
               sandbox_port: int) -> None:
    from admin_ui.accesslog import RedactingAccessLogger
    from admin_ui.app import build_dev_admin

    await migrate_database(settings.database_url or "")
    cleanups: list[Cleanup] = []
    lines = []
    if settings.upstream_url is None:
        cleanups.append(await _serve(build_sandbox_app(), sandbox_port, access_log=None))
        settings = settings.replace(upstream_url=f"http://127.0.0.1:{sandbox_port}")
        lines.append(f"  sandbox exchange  {settings.upstream_url}/public/v1")
    admin_app, admin_lines, admin_cleanup = await build_dev_admin(settings, admin_port)
    cleanups.append(admin_cleanup)
    listening, gateway_cleanup = await _serve_gateway(port, settings)
    cleanups.append(gateway_cleanup)
    cleanups.append(await _serve(build_status_app(lambda: listening.services),
                                 status_port, access_log=None))
    # SECURITY: links in the admin UI carry tokens; its access log redacts them.
    cleanups.append(await _serve(admin_app, admin_port, access_log_class=RedactingAccessLogger))
    print("Keygate is running:", flush=True)
    print(f"  gateway           http://127.0.0.1:{port}/public/v1", flush=True)
    print(f"  admin UI          http://127.0.0.1:{admin_port}/", flush=True)
    print(f"  status            http://127.0.0.1:{status_port}/metrics", flush=True)
    for line in [*lines, *admin_lines]:
        print(line, flush=True)
    print(f"  data folder       {settings.data_dir}  (Ctrl-C to stop)", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("stopping...", flush=True)
    for cleanup in reversed(cleanups):
        await cleanup()


def run_dev(settings: Settings, *, port: int, admin_port: int, status_port: int,
            sandbox_port: int) -> int:
    install_uvloop()
    with resolved(settings) as live:
        asyncio.run(_run(live, port, admin_port, status_port, sandbox_port))
    return 0
