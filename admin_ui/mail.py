"""Outgoing email: a `Mailer` Protocol, SMTP (aiosmtplib) and in-memory implementations.

Links in messages are built from `GATEWAY_ADMIN_URL` by the caller, never from a request's
Host header (which a client chooses).
"""

from __future__ import annotations

import email.utils
import logging
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
from aiohttp import web

__all__ = ["MAILER_KEY", "InMemoryMailer", "MailError", "Mailer", "Message", "SmtpMailer",
           "default_sender"]

log = logging.getLogger(__name__)


class MailError(Exception):
    """The message could not be handed to the mail server."""


@dataclass(frozen=True, slots=True)
class Message:
    to: str
    subject: str
    body: str


class Mailer(Protocol):
    async def send(self, message: Message) -> None:
        """Deliver `message` or raise `MailError`."""
        ...


def default_sender(admin_url: str) -> str:
    """`Keygate <no-reply@host>` for the admin UI's host (localhost when it is an address)."""
    host = urlsplit(admin_url).hostname or "localhost"
    if not any(ch.isalpha() for ch in host) or "." not in host:
        host = "localhost"
    return email.utils.formataddr(("Keygate", f"no-reply@{host}"))


def _build(message: Message, sender: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = message.to
    mail["Subject"] = message.subject
    mail["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2].rstrip(">"))
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(message.body)
    return mail


class SmtpMailer:
    """Sends through `smtp://[user:password@]host[:port]` (STARTTLS when offered) or
    `smtps://...` (TLS from the start). `?from=address` sets the sender."""

    def __init__(self, url: str, *, sender: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"not an smtp:// or smtps:// URL: {parts.scheme}://{parts.hostname}")
        self._is_tls = parts.scheme == "smtps"
        self._host = parts.hostname
        self._port = parts.port or (465 if self._is_tls else 25)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        query_from = parse_qs(parts.query).get("from")
        self.sender = query_from[0] if query_from else sender
        self._timeout = timeout

    def __repr__(self) -> str:
        # SECURITY: the URL's password stays out of logs.
        return f"SmtpMailer({self._host}:{self._port}, tls={self._is_tls})"

    async def send(self, message: Message) -> None:
        try:
            await aiosmtplib.send(
                _build(message, self.sender), hostname=self._host, port=self._port,
                username=self._username, password=self._password, use_tls=self._is_tls,
                timeout=self._timeout,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailError(f"could not send mail via {self._host}:{self._port}: {exc}") from exc


@dataclass
class InMemoryMailer:
    """Keeps messages in a list (tests); with `is_warning`, drops them with a warning instead
    (the stand-in when no SMTP server is configured)."""

    messages: list[Message] = field(default_factory=list)
    is_warning: bool = False

    async def send(self, message: Message) -> None:
        if self.is_warning:
            # The body holds links that act for the user: it is not logged.
            log.warning("no GATEWAY_SMTP_URL configured: mail to %s (%r) not sent",
                        message.to, message.subject)
            return
        self.messages.append(message)


MAILER_KEY: web.AppKey[Mailer] = web.AppKey("mailer")
