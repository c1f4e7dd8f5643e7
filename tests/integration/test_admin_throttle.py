"""Needs: PostgreSQL and Redis (tests/conftest.py). The admin UI's throttles, over real HTTP:
parallel guesses against the login and 2FA limits, the per-IP sign-up and reset limits, the
event loop during a burst of sign-ups, no account-existence oracle, the client IP used."""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import statistics
import threading
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from admin_ui.app import build_admin_app
from admin_ui.mail import InMemoryMailer
from gateway.config.settings import Settings
from tests.integration.test_admin_flows import (
    PASSWORD,
    Browser,
    code_at,
    enable_2fa,
    new_email,
)
from tests.support.servers import RunningApp, start_app

pytestmark = pytest.mark.integration

GUESSES = 30
LIMIT = 10


async def _started(settings: Settings, **kwargs: object) -> tuple[RunningApp, Browser]:
    mailer = InMemoryMailer()
    running = await start_app(build_admin_app(settings, mailer=mailer, **kwargs))  # type: ignore[arg-type]
    return running, Browser(running.url, mailer)


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[tuple[RunningApp, Browser, float]]:
    window = 8.0  # long enough for the burst on a loaded machine
    running, b = await _started(settings.replace(login_fail_limit=LIMIT,
                                                 login_fail_window=window))
    yield running, b, window
    await b.close()
    await running.stop()


# --- parallel guesses --------------------------------------------------------------------


async def test_parallel_wrong_passwords_evaluate_at_most_the_limit(
        limited: tuple[RunningApp, Browser, float]) -> None:
    _, b, window = limited
    email = new_email()
    await b.signup(email)
    await b.get("/login")
    started = time.monotonic()
    answers = await asyncio.gather(*(
        b.post("/login", {"email": email, "password": f"wrong password {i}"})
        for i in range(GUESSES)))
    statuses = [status for status, _, _ in answers]
    assert statuses.count(401) <= LIMIT, statuses
    assert statuses.count(429) == GUESSES - statuses.count(401), statuses
    assert all("Too many failed attempts" in text for status, text, _ in answers
               if status == 429)
    # Locked: even the right password is refused until the window has passed.
    status, text, _ = await b.login(email)
    assert time.monotonic() - started < window, "the burst outlasted the window"
    assert status == 429 and "Too many failed attempts" in text
    await asyncio.sleep(window + 1.2 - (time.monotonic() - started))
    status, _, resp = await b.login(email)
    assert status == 200 and resp.url.path == "/keys"


async def test_parallel_wrong_codes_evaluate_at_most_the_limit(
        limited: tuple[RunningApp, Browser, float]) -> None:
    _, b, window = limited
    email = new_email()
    await b.signup(email)
    await b.login(email)
    secret = await enable_2fa(b)
    await b.post("/logout")
    status, text, _ = await b.login(email)
    assert status == 200 and 'name="totp"' in text
    started = time.monotonic()
    answers = await asyncio.gather(*(b.post("/login", {"totp": "000000"})
                                     for _ in range(GUESSES)))
    evaluated = [text for _, text, _ in answers if "That code is not valid" in text]
    throttled = [status for status, text, _ in answers if "Too many failed attempts" in text]
    assert len(evaluated) <= LIMIT, [status for status, _, _ in answers]
    assert len(evaluated) + len(throttled) == GUESSES
    assert set(throttled) == {429}
    status, text, _ = await b.post("/login", {"totp": code_at(secret, 0)})
    assert time.monotonic() - started < window, "the burst outlasted the window"
    assert status == 429 and "Too many failed attempts" in text
    await asyncio.sleep(window + 1.2 - (time.monotonic() - started))
    status, _, resp = await b.post("/login", {"totp": code_at(secret, 0)})
    assert resp.url.path == "/keys"


# --- sign-up and reset requests per IP ---------------------------------------------------


async def test_signups_from_one_address_are_limited(settings: Settings) -> None:
    running, b = await _started(settings.replace(signup_ip_limit=3))
    try:
        for _ in range(3):
            await b.get("/signup")
            status, text, _ = await b.post("/signup", {"email": new_email(),
                                                       "password": PASSWORD})
            assert status == 200 and "Check your inbox" in text
        sent = len(b.mailer.messages)
        status, text, resp = await b.post("/signup", {"email": new_email(),
                                                      "password": PASSWORD})
        assert status == 429 and "Too many sign-ups from your network" in text
        assert int(resp.headers["Retry-After"]) > 0
        assert len(b.mailer.messages) == sent
    finally:
        await b.close()
        await running.stop()


async def test_reset_requests_from_one_address_are_limited(settings: Settings) -> None:
    running, b = await _started(settings.replace(forgot_ip_limit=2))
    try:
        email = new_email()
        await b.signup(email)
        for _ in range(2):
            await b.get("/password/forgot")
            status, text, _ = await b.post("/password/forgot", {"email": email})
            assert status == 200 and "Check your inbox" in text
        status, text, resp = await b.post("/password/forgot", {"email": email})
        assert status == 429 and "Too many password reset requests" in text
        assert int(resp.headers["Retry-After"]) > 0
    finally:
        await b.close()
        await running.stop()


def _probe_until(url: str, stop: threading.Event, latencies: list[float]) -> None:
    """GET `url` over one keep-alive connection until `stop`, from a thread of its own, so
    the time measured is the server's, not this test's event loop's."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        while not stop.is_set():
            began = time.perf_counter()
            conn.request("GET", "/login")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            latencies.append(time.perf_counter() - began)
            time.sleep(0.005)
    finally:
        conn.close()


async def test_the_loop_stays_responsive_during_a_signup_burst(settings: Settings) -> None:
    running, b = await _started(settings.replace(signup_ip_limit=1000))
    try:
        await b.get("/signup")
        stop = threading.Event()
        latencies: list[float] = []
        prober = asyncio.create_task(asyncio.to_thread(_probe_until, running.url, stop,
                                                       latencies))
        await asyncio.sleep(0.1)  # the prober's first answers: connection and templates warm
        try:
            answers = await asyncio.gather(*(
                b.post("/signup", {"email": new_email(), "password": PASSWORD})
                for _ in range(10)))
        finally:
            stop.set()
            await prober
        assert {status for status, _, _ in answers} == {200}
        # Argon2 on the loop stalls every other client for as long as the queued hashes
        # take; off the loop, another client's page waits for none of them.
        assert len(latencies) > 5 and max(latencies) < 0.25, latencies
    finally:
        await b.close()
        await running.stop()


def _timed_ratio(known: list[float], unknown: list[float]) -> float:
    return statistics.median(known) / statistics.median(unknown)


async def test_signup_answers_the_same_for_a_known_and_an_unknown_email(
        settings: Settings) -> None:
    running, b = await _started(settings.replace(signup_ip_limit=1000))
    try:
        taken = [new_email() for _ in range(7)]
        for email in taken:
            await b.signup(email)
        await b.get("/signup")
        known: list[float] = []
        unknown: list[float] = []
        bodies: set[str] = set()
        statuses: set[int] = set()
        for email in taken:
            for address, times in ((email, known), (new_email(), unknown)):
                began = time.perf_counter()
                status, text, _ = await b.post("/signup", {"email": address,
                                                           "password": PASSWORD})
                times.append(time.perf_counter() - began)
                statuses.add(status)
                bodies.add(text.replace(address, "EMAIL"))
        assert statuses == {200}
        assert len(bodies) == 1, "a known email must get the very page an unknown one gets"
        # The owner of a taken address hears of the attempt by mail; nothing else changes.
        assert "Sign-up attempt" in b.last_mail(taken[-1]).subject
        ratio = _timed_ratio(known, unknown)
        assert 1 / 2.5 < ratio < 2.5, (ratio, known, unknown)
    finally:
        await b.close()
        await running.stop()


async def test_forgot_answers_the_same_for_a_known_and_an_unknown_email(
        settings: Settings) -> None:
    from tests.support.services import free_port

    # Real SMTP: the time a message takes to hand over is what a stranger could measure.
    mail_port = free_port()
    running = await start_app(build_admin_app(settings.replace(forgot_ip_limit=1000),
                                              dev_mail_port=mail_port))
    b = Browser(running.url, InMemoryMailer())
    try:
        email = new_email()
        await b.get("/signup")
        await b.post("/signup", {"email": email, "password": PASSWORD})
        await b.get("/password/forgot")
        known: list[float] = []
        unknown: list[float] = []
        bodies: set[str] = set()
        for _ in range(11):
            for address, times in ((email, known), (new_email(), unknown)):
                await asyncio.sleep(0.1)  # the last reset mail out of the way, as a prober waits
                began = time.perf_counter()
                status, text, _ = await b.post("/password/forgot", {"email": address})
                times.append(time.perf_counter() - began)
                assert status == 200
                bodies.add(text.replace(address, "EMAIL"))
        assert len(bodies) == 1
        ratio = _timed_ratio(known, unknown)
        assert 1 / 2.5 < ratio < 2.5, (ratio, known, unknown)
        # The reset mail still reaches the owner (after the answer, not before it).
        for _ in range(100):
            async with b.http.get(running.url + "/dev/mailbox.json") as resp:
                resets = [m for m in await resp.json()
                          if m["to"] == email and "Reset" in m["subject"]]
            if resets:
                break
            await asyncio.sleep(0.05)
        assert resets and "/password/reset/" in resets[0]["body"]
    finally:
        await b.close()
        await running.stop()


# --- which address is counted ------------------------------------------------------------


async def _wrong_login(b: Browser, email: str, forwarded: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    async with b.http.post(b.base + "/login", data={
            "email": email, "password": "wrong password!", "csrf_token": b.csrf},
            headers=headers) as resp:
        await resp.read()
        return resp.status


async def test_forwarded_for_is_ignored_without_trusted_proxies(
        settings: Settings, db: asyncpg.Pool) -> None:
    # The per-IP budget is five accounts' worth of the per-account limit.
    running, b = await _started(settings.replace(login_fail_limit=2))
    try:
        owner = new_email()
        await b.signup(owner)
        await b.get("/login")
        statuses = [await _wrong_login(b, owner if i == 0 else new_email(), f"198.51.100.{i}")
                    for i in range(10)]
        assert statuses == [401] * 10
        # A new account and a new forged address each time: still the same socket peer.
        assert await _wrong_login(b, new_email(), "198.51.100.200") == 429
        async with db.acquire() as conn:
            ips = await conn.fetch(
                "SELECT host(client_ip) AS ip FROM audit_log a JOIN users u ON u.id = a.user_id"
                " WHERE u.email = $1 AND a.action = 'login.failed'", owner)
        assert [r["ip"] for r in ips] == ["127.0.0.1"]
    finally:
        await b.close()
        await running.stop()


async def test_behind_a_trusted_proxy_the_rightmost_untrusted_entry_counts(
        settings: Settings, db: asyncpg.Pool) -> None:
    trusted = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.7/32"))
    running, b = await _started(settings.replace(login_fail_limit=2, trusted_proxies=trusted))
    try:
        owner = new_email()
        await b.signup(owner)
        await b.get("/login")
        # The client forges the left-most entries; the trusted hop 10.0.0.7 is skipped.
        statuses = [await _wrong_login(b, owner if i == 0 else new_email(),
                                       f"192.0.2.{i}, 203.0.113.5, 10.0.0.7")
                    for i in range(10)]
        assert statuses == [401] * 10
        assert await _wrong_login(b, new_email(), "192.0.2.99, 203.0.113.5") == 429
        # Another client behind the same proxy has its own budget.
        assert await _wrong_login(b, new_email(), "203.0.113.6") == 401
        async with db.acquire() as conn:
            ips = await conn.fetch(
                "SELECT host(client_ip) AS ip FROM audit_log a JOIN users u ON u.id = a.user_id"
                " WHERE u.email = $1 AND a.action = 'login.failed'", owner)
        assert [r["ip"] for r in ips] == ["203.0.113.5"]
    finally:
        await b.close()
        await running.stop()

