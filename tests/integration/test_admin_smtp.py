"""Needs: PostgreSQL and Redis (tests/conftest.py). The admin UI's mail over real SMTP (an
aiosmtpd server): refused without TLS unless the URL says plain on purpose, and what the user
and the log are told then; the dev mailbox's order."""

from __future__ import annotations

import asyncio
import logging

import pytest

from admin_ui.app import build_admin_app
from admin_ui.devmail import DevMailbox, start_mail_sink
from admin_ui.mail import InMemoryMailer
from gateway.config.settings import Settings
from tests.integration.test_admin_flows import PASSWORD, Browser, new_email
from tests.support.servers import start_app
from tests.support.services import free_port

pytestmark = pytest.mark.integration


async def test_smtp_without_starttls_is_refused_with_a_clear_log_and_page(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    mailbox = DevMailbox()
    port = free_port()
    sink = await start_mail_sink(mailbox, "127.0.0.1", port)  # offers no STARTTLS
    running = await start_app(build_admin_app(
        settings.replace(smtp_url=f"smtp://127.0.0.1:{port}")))
    b = Browser(running.url, InMemoryMailer())
    try:
        caplog.set_level(logging.INFO)
        await b.get("/signup")
        status, text, _ = await b.post("/signup", {"email": new_email(),
                                                   "password": PASSWORD})
        assert status == 200 and "We could not send the email" in text
        assert mailbox.messages == []
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("does not offer STARTTLS" in line and "tls=off" in line
                   for line in errors), errors
    finally:
        await b.close()
        await running.stop()
        sink.close()
        await sink.wait_closed()


async def test_smtp_plain_on_purpose_delivers(settings: Settings) -> None:
    mailbox = DevMailbox()
    port = free_port()
    sink = await start_mail_sink(mailbox, "127.0.0.1", port)
    running = await start_app(build_admin_app(
        settings.replace(smtp_url=f"smtp://127.0.0.1:{port}?tls=off")))
    b = Browser(running.url, InMemoryMailer())
    try:
        email = new_email()
        await b.get("/signup")
        status, text, _ = await b.post("/signup", {"email": email, "password": PASSWORD})
        assert status == 200 and "We sent a link" in text
        assert [m.to for m in mailbox.messages] == [email]
    finally:
        await b.close()
        await running.stop()
        sink.close()
        await sink.wait_closed()


async def test_mailbox_lists_newest_first(settings: Settings) -> None:
    running = await start_app(build_admin_app(settings, dev_mail_port=free_port()))
    b = Browser(running.url, InMemoryMailer())
    try:
        first, second = new_email(), new_email()
        for email in (first, second):
            await b.get("/signup")
            await b.post("/signup", {"email": email, "password": PASSWORD})
        for _ in range(100):
            async with b.http.get(running.url + "/dev/mailbox.json") as resp:
                messages = await resp.json()
            if len(messages) >= 2:
                break
            await asyncio.sleep(0.05)
        assert [m["to"] for m in messages] == [second, first]
        _, page, _ = await b.get("/dev/mailbox")
        assert "newest first" in page
        assert page.index(second) < page.index(first)
    finally:
        await b.close()
        await running.stop()
