"""Needs: PostgreSQL and Redis (tests/conftest.py). What every admin UI answer carries: the
security headers on every page, error pages included; the session cookie's name and flags,
and HSTS, for an https and a plain-http GATEWAY_ADMIN_URL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from admin_ui.app import build_admin_app
from admin_ui.db import POOL_KEY
from admin_ui.mail import InMemoryMailer
from gateway.config.settings import Settings
from tests.integration.test_admin_flows import PASSWORD, Browser, new_email
from tests.support.servers import RunningApp, start_app

pytestmark = pytest.mark.integration


def assert_security_headers(headers: CIMultiDictProxy[str] | Mapping[str, str]) -> None:
    csp = headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, dict(headers)
    assert headers.get("X-Frame-Options") == "DENY"
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert headers.get("Referrer-Policy") == "no-referrer"
    assert headers.get("Cache-Control") == "no-store"


@pytest.fixture
async def admin(settings: Settings) -> AsyncIterator[tuple[RunningApp, Browser]]:
    mailer = InMemoryMailer()
    running = await start_app(build_admin_app(settings, mailer=mailer))
    b = Browser(running.url, mailer)
    yield running, b
    await b.close()
    await running.stop()


async def test_pages_carry_the_security_headers(admin: tuple[RunningApp, Browser]) -> None:
    _, b = admin
    for path in ("/login", "/signup", "/password/forgot"):
        _, _, resp = await b.get(path)
        assert resp.status == 200
        assert_security_headers(resp.headers)


async def test_a_bad_form_gets_a_page_with_the_headers(admin: tuple[RunningApp, Browser]
                                                       ) -> None:
    _, b = admin
    await b.get("/signup")
    status, _, resp = await b.post("/signup", {"email": "not an address", "password": "x"})
    assert status == 400
    assert_security_headers(resp.headers)
    # A body the form parser itself refuses (bad UTF-8): a 400 page too, not a bare error.
    async with b.http.post(b.base + "/signup", data=b"email=%FF%FE\xff&csrf_token=" +
                           b.csrf.encode(),
                           headers={"Content-Type": "application/x-www-form-urlencoded"}
                           ) as resp:
        text = await resp.text()
        assert resp.status == 400, text
        assert_security_headers(resp.headers)
        assert "<h1>" in text


async def test_a_forged_post_gets_403_with_the_headers(admin: tuple[RunningApp, Browser]
                                                       ) -> None:
    _, b = admin
    status, text, resp = await b.post("/signup", {"email": new_email(), "password": PASSWORD},
                                      csrf=False)
    assert status == 403 and "Form expired" in text
    assert_security_headers(resp.headers)


async def test_404_and_405_carry_the_headers(admin: tuple[RunningApp, Browser]) -> None:
    _, b = admin
    status, text, resp = await b.get("/no/such/page")
    assert status == 404 and "Page not found" in text
    assert_security_headers(resp.headers)
    await b.get("/login")
    status, _, resp = await b.post("/keys", {})
    assert status == 405 and "GET" in resp.headers.get("Allow", "")
    assert_security_headers(resp.headers)


async def test_an_oversized_form_gets_413_with_the_headers(
        admin: tuple[RunningApp, Browser]) -> None:
    _, b = admin
    await b.get("/signup")
    status, text, resp = await b.post("/signup", {"email": new_email(),
                                                  "password": "x" * (2 * 1024**2)})
    assert status == 413, text
    assert "too large" in text
    assert_security_headers(resp.headers)


async def test_a_failure_gets_500_with_the_headers(settings: Settings) -> None:
    mailer = InMemoryMailer()
    running = await start_app(build_admin_app(settings, mailer=mailer))
    b = Browser(running.url, mailer)
    try:
        await b.get("/login")
        # PostgreSQL gone (here: the pool closed under the app): every page needs a session.
        await running.app[POOL_KEY].close()
        status, text, resp = await b.get("/login")
        assert status == 500 and "Something went wrong" in text
        assert "Traceback" not in text and "asyncpg" not in text
        assert_security_headers(resp.headers)
    finally:
        await b.close()
        await running.stop()


async def test_static_files_carry_the_headers(admin: tuple[RunningApp, Browser]) -> None:
    running, _ = admin
    async with aiohttp.ClientSession() as http:
        async with http.get(running.url + "/static/admin.css") as resp:
            assert resp.status == 200
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        async with http.get(running.url + "/static/missing.css") as resp:
            assert resp.status == 404
            assert resp.headers["X-Content-Type-Options"] == "nosniff"


# --- cookie and HSTS by GATEWAY_ADMIN_URL ------------------------------------------------


async def test_https_admin_url_gives_a_host_prefixed_secure_cookie_and_hsts(
        settings: Settings) -> None:
    mailer = InMemoryMailer()
    running = await start_app(build_admin_app(
        settings.replace(admin_url="https://admin.example.test"), mailer=mailer))
    # The test talks plain HTTP to the app (as a TLS-terminating proxy would): the jar must be
    # told to send a Secure cookie there.
    b = Browser(running.url, mailer)
    await b.http.close()
    b.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(
        unsafe=True, treat_as_secure_origin=[running.url]))
    try:
        _, _, resp = await b.get("/login")
        cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith("__Host-keygate_session=")
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"secure", "httponly", "path", "samesite"} <= flags and "domain" not in flags
        assert "Path=/" in cookie
        hsts = resp.headers["Strict-Transport-Security"]
        assert "max-age=" in hsts and int(hsts.split("max-age=")[1].split(";")[0]) >= 31536000
        # Error pages too.
        status, _, resp = await b.get("/nothing-here")
        assert status == 404 and "Strict-Transport-Security" in resp.headers
        # The prefixed cookie is the session: sign up, log in, stay logged in.
        email = new_email()
        await b.signup(email)
        status, text, resp = await b.login(email)
        assert resp.url.path == "/keys" and "API keys" in text
        assert {c.key for c in b.http.cookie_jar} == {"__Host-keygate_session"}
        # Under the plain name, the same id is no session there.
        sid = next(iter(b.http.cookie_jar)).value
        async with aiohttp.ClientSession() as bare:
            for name, expected in (("keygate_session", 303), ("__Host-keygate_session", 200)):
                async with bare.get(running.url + "/keys", allow_redirects=False,
                                    headers={"Cookie": f"{name}={sid}"}) as resp:
                    assert resp.status == expected, name
    finally:
        await b.close()
        await running.stop()


async def test_plain_http_admin_url_keeps_a_plain_cookie_and_no_hsts(settings: Settings
                                                                     ) -> None:
    mailer = InMemoryMailer()
    running = await start_app(build_admin_app(
        settings.replace(admin_url="http://127.0.0.1:8081"), mailer=mailer))
    b = Browser(running.url, mailer)
    try:
        _, _, resp = await b.get("/login")
        cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith("keygate_session=") and "Secure" not in cookie
        assert "Strict-Transport-Security" not in resp.headers
        email = new_email()
        await b.signup(email)
        _, _, resp = await b.login(email)
        assert resp.url.path == "/keys"
    finally:
        await b.close()
        await running.stop()
