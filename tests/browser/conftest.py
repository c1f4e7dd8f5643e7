"""Browser test fixtures: the system chromium (never a downloaded one), and the whole stack.

Needs: PostgreSQL and Redis (tests/conftest.py) and a chromium on PATH (`make test` installs
Debian's when it can; otherwise these tests are skipped with the command to run).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from admin_ui.app import build_admin_app
from admin_ui.devmail import DevMailbox, start_mail_sink
from gateway.config.settings import Settings
from sandbox import build_sandbox_app
from tests.support.servers import RunningGateway, start_app, start_gateway
from tests.support.services import free_port

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium on PATH: run `make browser-deps` "
                    "(or `sudo apt-get install chromium`)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=executable,
                                                    args=CHROMIUM_ARGS, headless=True)
        yield instance
        await instance.close()


@dataclass
class Stack:
    """The admin UI (sending real SMTP to a sink), the gateway, and the sandbox upstream."""

    admin_url: str
    gateway_url: str
    mailbox: DevMailbox
    settings: Settings


async def _start_on(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@asynccontextmanager
async def _stack(settings: Settings, **overrides: Any) -> AsyncIterator[Stack]:
    sandbox = await start_app(build_sandbox_app())
    mail_port, admin_port = free_port(), free_port()
    admin_url = f"http://127.0.0.1:{admin_port}"
    live = settings.replace(upstream_url=sandbox.url, admin_url=admin_url,
                            smtp_url=f"smtp://127.0.0.1:{mail_port}?tls=off", **overrides)
    mailbox = DevMailbox()
    sink = await start_mail_sink(mailbox, "127.0.0.1", mail_port)
    gateway: RunningGateway | None = None
    admin: web.AppRunner | None = None
    try:
        gateway = await start_gateway(live)
        # Mail takes the real path: aiosmtplib -> SMTP -> the aiosmtpd sink -> /dev/mailbox.
        admin = await _start_on(build_admin_app(live, dev_mailbox=mailbox), admin_port)
        yield Stack(admin_url, gateway.url, mailbox, live)
    finally:
        if admin is not None:
            await admin.cleanup()
        if gateway is not None:
            await gateway.stop()
        sink.close()
        await sink.wait_closed()
        await sandbox.stop()


@pytest.fixture
def stack_factory(settings: Settings) -> Callable[..., AbstractAsyncContextManager[Stack]]:
    """`async with stack_factory(confirm_link_ttl=0) as stack:` a stack with some settings."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[Stack]:
        return _stack(settings, **overrides)

    return make


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with _stack(settings) as running:
        yield running


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
