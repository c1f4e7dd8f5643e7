"""Needs: PostgreSQL and Redis (tests/conftest.py). Emailed links carry tokens: opening every
one of them, in every state (valid, used, logged out, prefetched, mangled, failing), writes
no token into any log line, the access log included, nor into an error page."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from admin_ui.app import build_admin_app
from admin_ui.db import POOL_KEY
from admin_ui.mail import InMemoryMailer
from gateway.config.settings import Settings
from tests.integration.test_admin_flows import PASSWORD, Browser, new_email
from tests.support.services import free_port

pytestmark = pytest.mark.integration

_TOKEN = re.compile(r"/(?:verify|password/reset|keys/confirm)/([A-Za-z0-9_-]{43})")


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[web.AppRunner, Browser]]:
    """The admin app behind a plain runner with an access log, as any caller may serve it
    (no access logger class chosen: the app must bring its own)."""
    mailer = InMemoryMailer()
    runner = web.AppRunner(build_admin_app(settings, mailer=mailer), handle_signals=False,
                           access_log=logging.getLogger("admin_ui.access"))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    b = Browser(f"http://127.0.0.1:{port}", mailer)
    yield runner, b
    await b.close()
    await runner.cleanup()


async def _token(b: Browser, to: str, subject: str) -> tuple[str, str]:
    path = b.link_path(await b.wait_mail(to, subject))
    match = _TOKEN.search(path)
    assert match, path
    return path, match.group(1)


async def test_no_emailed_token_reaches_a_log_or_an_error_page(
        served: tuple[web.AppRunner, Browser], caplog: pytest.LogCaptureFixture) -> None:
    runner, b = served
    caplog.set_level(logging.DEBUG)
    tokens: list[str] = []
    pages: list[str] = []

    async def visit(path: str, **kwargs: object) -> int:
        status, text, _ = await b.get(path, **kwargs)
        if status >= 400:
            pages.append(text)
        return status

    # Email verification: valid, then used, then mangled.
    email = new_email()
    await b.get("/signup")
    await b.post("/signup", {"email": email, "password": PASSWORD})
    verify, token = await _token(b, email, "Confirm your email")
    tokens.append(token)
    assert await visit(verify) == 200
    assert await visit(verify) == 410
    assert await visit(verify + "/") == 404
    assert await visit(verify + "x") == 404

    # Password reset: the form, its POST, then used.
    await b.get("/password/forgot")
    await b.post("/password/forgot", {"email": email})
    reset, token = await _token(b, email, "Reset")
    tokens.append(token)
    assert await visit(reset) == 200
    status, _, _ = await b.post(reset, {"password": "a brand new password"})
    assert status == 200
    assert await visit(reset) == 410

    # Key confirmation: logged out (sent to log in with the link in `next`), prefetched,
    # HEAD, then opened by its owner, then used.
    await b.login(email, "a brand new password")
    await b.create_key("logged")
    confirm, token = await _token(b, email, "Confirm your new API key")
    tokens.append(token)
    await b.post("/logout")
    assert await visit(confirm) == 200  # the login page, `next` in its query
    await b.login(email, "a brand new password")
    assert await visit(confirm, headers={"Sec-Purpose": "prefetch"}) == 503
    async with b.http.head(b.base + confirm) as resp:
        assert resp.status == 405
    status, text, _ = await b.get(confirm)
    assert status == 200 and 'id="api-key"' in text
    assert await visit(confirm) == 410

    # A failure while a link is open: logged, with no token.
    await b.create_key("failing")
    confirm, token = await _token(b, email, "\u201cfailing\u201d")
    tokens.append(token)
    await runner.app[POOL_KEY].close()
    assert await visit(confirm) == 500
    assert await visit(reset) == 500

    logged = caplog.text
    assert "/keys/confirm/" in logged and "/verify/" in logged, "the access log was captured"
    assert "error handling" in logged.lower() or "Error" in logged
    for token in tokens:
        assert token not in logged
        for page in pages:
            assert token not in page
