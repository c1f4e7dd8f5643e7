"""`gateway dev`: the whole stack in one process, on embedded defaults.

Embedded PostgreSQL and Redis (unless URLs are set), migrations, the sandbox exchange as
upstream (unless one is configured), the dev mail sink (unless SMTP is configured), the
gateway, its status port and the admin UI. Ctrl-C stops everything it started.

Every port is opened, and every start-up check made, before anything starts: a refusal
(`StartupError`) leaves nothing running.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.config.settings import Settings
from gateway.edge.server import Listening, install_uvloop, listen
from gateway.observability.status import build_status_app
from gateway.ops.runtime import migrate_database, resolved
from gateway.ops.startup import (
    PortClaim,
    StartupError,
    claim_ports,
    embedded_problems,
    missing_modules,
    port_problem,
    route_problems,
    tls_problems,
)
from sandbox import build_sandbox_app

__all__ = ["DevPorts", "run_dev"]

Cleanup = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DevPorts:
    """The ports of `gateway dev`, each with its flag."""

    port: int = 8080
    admin_port: int = 8081
    status_port: int = 8082
    sandbox_port: int = 9000
    mail_port: int = 1025

    def claims(self, settings: Settings) -> list[PortClaim]:
        """The ports this run will listen on: the sandbox and the mail sink only when
        no upstream and no SMTP server are configured."""
        claims = [PortClaim(self.port, "the gateway's", "--port"),
                  PortClaim(self.admin_port, "the admin UI's", "--admin-port"),
                  PortClaim(self.status_port, "the status port's", "--status-port")]
        if settings.upstream_url is None:
            claims.append(PortClaim(self.sandbox_port, "the sandbox exchange's",
                                    "--sandbox-port"))
        if settings.smtp_url is None:
            claims.append(PortClaim(self.mail_port, "the dev mail sink's", "--mail-port"))
        return claims


async def _serve(app: web.Application, sock: socket.socket, **kwargs: object) -> Cleanup:
    runner = web.AppRunner(app, handle_signals=False, **kwargs)  # type: ignore[arg-type]
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner.cleanup


async def _serve_gateway(sock: socket.socket, settings: Settings) -> tuple[Listening, Cleanup]:
    """As `gateway serve` serves it: the same edge, limits and error answers."""
    listening = await listen(settings, sock)
    return listening, listening.aclose


async def _build_admin(settings: Settings, ports: DevPorts, mail_sock: socket.socket | None
                       ) -> tuple[web.Application, list[str], Cleanup]:
    from admin_ui.app import build_dev_admin

    if mail_sock is not None:
        mail_sock.close()  # the sink opens the port itself, at once
    try:
        return await build_dev_admin(settings, ports.admin_port, mail_port=ports.mail_port)
    except OSError as exc:  # taken in the moment between the check and the sink's start
        if exc.errno != errno.EADDRINUSE:
            raise
        claim = PortClaim(ports.mail_port, "the dev mail sink's", "--mail-port")
        raise StartupError.of([port_problem(claim, exc)]) from exc


async def _run(settings: Settings, ports: DevPorts, socks: dict[str, socket.socket]) -> None:
    from admin_ui.accesslog import RedactingAccessLogger

    cleanups: list[Cleanup] = []
    try:
        await migrate_database(settings.database_url or "")
        lines = []
        if settings.upstream_url is None:
            cleanups.append(await _serve(build_sandbox_app(), socks["--sandbox-port"],
                                         access_log=None))
            settings = settings.replace(upstream_url=f"http://127.0.0.1:{ports.sandbox_port}")
            lines.append(f"  sandbox exchange  {settings.upstream_url}/public/v1")
        admin_app, admin_lines, admin_cleanup = await _build_admin(
            settings, ports, socks.get("--mail-port"))
        cleanups.append(admin_cleanup)
        listening, gateway_cleanup = await _serve_gateway(socks["--port"], settings)
        cleanups.append(gateway_cleanup)
        cleanups.append(await _serve(build_status_app(lambda: listening.services),
                                     socks["--status-port"], access_log=None))
        # SECURITY: links in the admin UI carry tokens; its access log redacts them.
        cleanups.append(await _serve(admin_app, socks["--admin-port"],
                                     access_log_class=RedactingAccessLogger))
        print("Keygate is running:", flush=True)
        print(f"  gateway           http://127.0.0.1:{ports.port}/public/v1", flush=True)
        print(f"  admin UI          http://127.0.0.1:{ports.admin_port}/", flush=True)
        print(f"  status            http://127.0.0.1:{ports.status_port}/", flush=True)
        for line in [*lines, *admin_lines]:
            print(line, flush=True)
        print(f"  data folder       {settings.data_dir}  (Ctrl-C to stop)", flush=True)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("stopping...", flush=True)
    finally:
        for cleanup in reversed(cleanups):
            await cleanup()


def _problems(settings: Settings, ports: DevPorts) -> list[str]:
    """Everything but the ports that would stop `gateway dev`."""
    sandbox = None if settings.upstream_url else f"http://127.0.0.1:{ports.sandbox_port}"
    problems = [*route_problems(settings, sandbox), *tls_problems(settings),
                *embedded_problems(settings, "dev")]
    if settings.smtp_url is None and "aiosmtpd" in missing_modules(["aiosmtpd"]):
        problems.append("error: GATEWAY_SMTP_URL is not set, and the dev mail sink needs the "
                        "'embedded' extra (aiosmtpd not installed): set it, or install "
                        "keygate[embedded]")
    return problems


def run_dev(settings: Settings, ports: DevPorts) -> int:
    """Run until Ctrl-C; raises `StartupError` (nothing started) when it cannot start."""
    socks = claim_ports(ports.claims(settings), _problems(settings, ports))
    try:
        install_uvloop()
        with resolved(settings) as live:
            asyncio.run(_run(live, ports, socks))
    finally:
        for sock in socks.values():
            sock.close()
    return 0
