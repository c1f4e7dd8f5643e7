"""Real servers for tests: aiohttp apps on free loopback ports, and the key factory."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from gateway.config.settings import Settings
from gateway.edge.server import Listening, bind, listen
from gateway.keys.accounts import create_user
from gateway.keys.allowlist import parse_allowlist
from gateway.keys.lifecycle import activate_key, create_key
from gateway.services import Gateway

__all__ = ["IssuedKey", "RunningApp", "RunningGateway", "bearer", "issue_key", "raw_request",
           "start_app", "start_gateway"]


@dataclass
class RunningApp:
    """An aiohttp app (the sandbox, the admin UI) on a loopback port."""

    runner: web.AppRunner
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app(self) -> web.Application:
        return self.runner.app

    async def stop(self) -> None:
        await self.runner.cleanup()


@dataclass
class RunningGateway:
    """The gateway's data plane on a loopback port, served as `gateway serve` serves it."""

    listening: Listening
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def services(self) -> Gateway:
        return self.listening.services

    async def stop(self) -> None:
        await self.listening.aclose()


async def start_app(app: web.Application, **handler_args: object) -> RunningApp:
    """Serve `app` on a free loopback port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **handler_args)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return RunningApp(runner, port)


async def start_gateway(settings: Settings, host: str = "127.0.0.1") -> RunningGateway:
    """The gateway on a free loopback port, served as `gateway serve` serves it (the same
    edge, limits and per-connection state)."""
    sock = bind(host, 0)
    listening = await listen(settings, sock)
    return RunningGateway(listening, sock.getsockname()[1])


@dataclass
class IssuedKey:
    token: str
    key_id: str
    user_id: int


async def issue_key(
    db: asyncpg.Pool,
    settings: Settings,
    permissions: Sequence[str] = ("read",),
    ips: Sequence[str] = (),
    user_id: int | None = None,
) -> IssuedKey:
    """An active key for a new (or given) user, made the way `gateway keys create` does."""
    async with db.acquire() as conn:
        if user_id is None:
            user_id = await create_user(conn, f"u{secrets.token_hex(6)}@example.com",
                                        "correct horse battery", verified=True)
        key_id = await create_key(conn, user_id=user_id, name="test", permissions=permissions,
                                  allowed_ips=parse_allowlist(ips), actor="test")
        token = await activate_key(conn, key_id, pepper=settings.key_pepper or "",
                                   hash_version=settings.key_pepper_version, actor="test")
    return IssuedKey(token, key_id, user_id)


def bearer(key: str | IssuedKey) -> dict[str, str]:
    """The `Authorization` header presenting `key` (a token, or an issued key)."""
    token = key if isinstance(key, str) else key.token
    return {"Authorization": f"Bearer {token}"}


async def raw_request(port: int, request: bytes, *, until_closed: bool = False) -> bytes:
    """Send bytes exactly as written (no client library normalising them). The answer: the
    first read of it, or, `until_closed`, all of it up to the server's close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read() if until_closed else reader.read(65536), 5)
    finally:
        writer.close()
