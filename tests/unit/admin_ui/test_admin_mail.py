"""admin_ui.mail and admin_ui.devmail: SMTP URLs, and a real SMTP round trip into the sink."""

from __future__ import annotations

import socket

import pytest

from admin_ui.devmail import DevMailbox, start_mail_sink
from admin_ui.mail import InMemoryMailer, MailError, Message, SmtpMailer, default_sender


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
        mailer = SmtpMailer(f"smtp://127.0.0.1:{port}", sender="Keygate <no-reply@localhost>")
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

