"""Needs: PostgreSQL and Redis (tests/conftest.py), the gateway and the sandbox as real servers
(tests/integration/conftest.py). The Activity page tells the user, in words, what happened
and why: requests the gateway refused show the method, path, code and its reason."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from admin_ui.app import build_admin_app
from admin_ui.mail import InMemoryMailer
from gateway.config.settings import Settings
from tests.integration.test_admin_flows import Browser, new_email
from tests.support.servers import RunningApp, bearer, start_app

pytestmark = pytest.mark.integration

BALANCES = "/public/v1/account/balances"
ORDERS = "/public/v1/account/orders"


@pytest.fixture
async def admin(gateway_settings: Settings) -> AsyncIterator[Browser]:
    mailer = InMemoryMailer()
    running = await start_app(build_admin_app(gateway_settings, mailer=mailer))
    b = Browser(running.url, mailer)
    yield b
    await b.close()
    await running.stop()


async def _key(b: Browser, email: str, name: str, ips: str) -> str:
    status, _, _ = await b.create_key(name, ["read"], ips)
    assert status == 200
    path = b.link_path(b.last_mail(email, f"\u201c{name}\u201d"))
    _, text, _ = await b.get(path)
    match = re.search(r'id="api-key"[^>]*>([^<]+)<', text)
    assert match, text
    return match.group(1)


def _visible(page: str) -> str:
    main = page.split("<main", 1)[1]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", main)))


async def test_refused_requests_show_method_path_code_and_reason(
        admin: Browser, gateway: RunningApp) -> None:
    b = admin
    email = new_email()
    await b.signup(email)
    await b.login(email)
    elsewhere = await _key(b, email, "elsewhere", "192.0.2.1")
    reader = await _key(b, email, "reader", "")
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + BALANCES, headers=bearer(elsewhere)) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "INVALID_IP_RESTRICTION"
        async with http.post(gateway.url + ORDERS, headers=bearer(reader), json={}) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "MISSING_PERMISSION"
    text = ""
    for _ in range(60):  # the gateway writes its audit rows in batches
        _, page, _ = await b.get("/audit")
        text = _visible(page)
        if text.count("Refused") >= 2:
            break
        await asyncio.sleep(0.1)
    assert (f"Refused GET {BALANCES}: INVALID_IP_RESTRICTION (client IP not allowed)"
            in text), text
    assert f"Refused POST {ORDERS}: MISSING_PERMISSION (the key lacks the route's permission)" \
        in text, text
    assert "request.denied" not in text
    # The rest of the account's story, in sentences too.
    for sentence in ("Signed up", "Email address confirmed", "Logged in with password",
                     "Key created (pending confirmation): \u201celsewhere\u201d, permissions "
                     "read; IP addresses 192.0.2.1",
                     "Key confirmed and shown once"):
        assert sentence in text, (sentence, text)
    raw = re.findall(r"\b(?:signup|login|logout|2fa|password|key|email|request)\.[a-z_]+",
                     text.replace(email, ""))
    assert raw == [], "raw action codes shown"
