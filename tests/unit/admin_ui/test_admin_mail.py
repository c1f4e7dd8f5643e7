"""admin_ui.mail and admin_ui.devmail: SMTP URLs, and a real SMTP round trip into the sink."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from admin_ui.devmail import DevMailbox, start_mail_sink
from admin_ui.mail import InMemoryMailer, MailError, Message, SmtpMailer, default_sender
from tests.support.tls import self_signed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_default_sender() -> None:
    assert default_sender("https://admin.example.com") == "Keygate <no-reply@admin.example.com>"
    assert default_sender("http://127.0.0.1:8081") == "Keygate <no-reply@localhost>"


def test_smtp_url() -> None:
    mailer = SmtpMailer("smtps://user:p%40ss@mail.example.com?from=ops@example.com",
                        sender="x@example.com")
    assert mailer.sender == "ops@example.com"
    assert "p@ss" not in repr(mailer) and "465" in repr(mailer)
    with pytest.raises(ValueError):
        SmtpMailer("http://mail.example.com", sender="x@example.com")


async def test_smtp_into_the_dev_sink() -> None:
    mailbox = DevMailbox()
    port = _free_port()
    server = await start_mail_sink(mailbox, "127.0.0.1", port)
    try:
        mailer = SmtpMailer(f"smtp://127.0.0.1:{port}?tls=off",
                            sender="Keygate <no-reply@localhost>")
        await mailer.send(Message("a@example.com", "Confirm your new API key \u201cbot\u201d",
                                  "Open https://admin.example.com/keys/confirm/abc\n"))
    finally:
        server.close()
        await server.wait_closed()
    [entry] = mailbox.messages
    assert entry.to == "a@example.com"
    assert entry.subject == "Confirm your new API key \u201cbot\u201d"
    assert "https://admin.example.com/keys/confirm/abc" in entry.body
    assert "\r" not in entry.body
    assert entry.date.endswith("+00:00")


async def test_smtp_failure_is_a_mail_error() -> None:
    mailer = SmtpMailer(f"smtp://127.0.0.1:{_free_port()}", sender="x@localhost", timeout=2)
    with pytest.raises(MailError):
        await mailer.send(Message("a@example.com", "s", "b"))


async def test_in_memory_mailer() -> None:
    mailer = InMemoryMailer()
    await mailer.send(Message("a@example.com", "s", "b"))
    assert mailer.messages == [Message("a@example.com", "s", "b")]
    quiet = InMemoryMailer(is_warning=True)
    await quiet.send(Message("a@example.com", "s", "b"))
    assert quiet.messages == []


# --- TLS: refused without it, unless the URL says plain on purpose -----------------------


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) from a throwaway certificate."""
    cert, key = self_signed(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


async def _sink(mailbox: DevMailbox, **smtp_options: Any) -> tuple[asyncio.Server, int]:
    """A real aiosmtpd server on a free port; `ssl` wraps it in TLS from the first byte."""
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    server_ssl = smtp_options.pop("ssl", None)
    server = await loop.create_server(
        lambda: SMTP(mailbox, hostname="test-mail", loop=loop, **smtp_options),
        host="127.0.0.1", port=0, ssl=server_ssl)
    return server, server.sockets[0].getsockname()[1]


async def test_smtp_refuses_a_server_without_starttls(caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    mailbox = DevMailbox()
    server, port = await _sink(mailbox)
    try:
        mailer = SmtpMailer(f"smtp://127.0.0.1:{port}", sender="x@localhost", timeout=5)
        with pytest.raises(MailError, match="does not offer STARTTLS") as caught:
            await mailer.send(Message("a@example.com", "s", "secret link"))
        assert "tls=off" in str(caught.value) and "smtps://" in str(caught.value)
    finally:
        server.close()
        await server.wait_closed()
    assert mailbox.messages == []


async def test_smtp_plain_on_purpose_sends() -> None:
    mailbox = DevMailbox()
    server, port = await _sink(mailbox)
    try:
        mailer = SmtpMailer(f"smtp://127.0.0.1:{port}?tls=off", sender="x@localhost")
        assert "tls=off" in repr(mailer)
        await mailer.send(Message("a@example.com", "s", "b"))
    finally:
        server.close()
        await server.wait_closed()
    assert [m.to for m in mailbox.messages] == ["a@example.com"]


async def test_smtp_upgrades_with_starttls(tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
                                           ) -> None:
    server_ctx, client_ctx = tls_pair
    mailbox = DevMailbox()
    # The server refuses any mail before STARTTLS: delivery proves the upgrade happened.
    server, port = await _sink(mailbox, tls_context=server_ctx, require_starttls=True)
    try:
        mailer = SmtpMailer(f"smtp://127.0.0.1:{port}", sender="x@localhost",
                            tls_context=client_ctx)
        await mailer.send(Message("a@example.com", "s", "b"))
    finally:
        server.close()
        await server.wait_closed()
    assert [m.to for m in mailbox.messages] == ["a@example.com"]


async def test_smtps_is_tls_from_the_start(tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
                                           ) -> None:
    server_ctx, client_ctx = tls_pair
    mailbox = DevMailbox()
    server, port = await _sink(mailbox, ssl=server_ctx)
    try:
        await SmtpMailer(f"smtps://127.0.0.1:{port}", sender="x@localhost",
                         tls_context=client_ctx).send(Message("a@example.com", "s", "b"))
        # An untrusted certificate is refused, not waved through.
        with pytest.raises(MailError):
            await SmtpMailer(f"smtps://127.0.0.1:{port}", sender="x@localhost",
                             timeout=5).send(Message("b@example.com", "s", "b"))
    finally:
        server.close()
        await server.wait_closed()
    assert [m.to for m in mailbox.messages] == ["a@example.com"]


@pytest.mark.parametrize(("url", "message"), [
    ("smtp://mail.example.com?tls=maybe", "tls=maybe"),
    ("smtps://mail.example.com?tls=off", "smtps:// is always TLS"),
    ("smtp://user:pw@mail.example.com?tls=off", "password in clear"),
])
def test_bad_tls_options_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SmtpMailer(url, sender="x@example.com")


def test_settings_accept_the_plain_opt_out() -> None:
    from gateway.config.settings import load_settings

    url = "smtp://mail.internal:25?tls=off"
    settings = load_settings(None, {"GATEWAY_SMTP_URL": url})
    assert settings.smtp_url == url
    assert "tls=off" in repr(SmtpMailer(settings.smtp_url, sender="x@example.com"))
