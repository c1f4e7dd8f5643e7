"""Outgoing email: a `Mailer` Protocol, SMTP (aiosmtplib) and in-memory implementations.

Links in messages are built from `GATEWAY_ADMIN_URL` by the caller, never from a request's
Host header (which a client chooses).
"""

from __future__ import annotations

import email.utils
import logging
import ssl
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


_TLS_MODES = ("starttls", "off")


class SmtpMailer:
    """Sends through SMTP, never in clear unless the URL says so:

    - `smtps://[user:password@]host[:465]`: TLS from the first byte;
    - `smtp://[user:password@]host[:25]`: STARTTLS required; a server that does not offer it
      gets nothing (`MailError`);
    - `smtp://host[:25]?tls=off`: plain SMTP on purpose (a relay on the same host, the dev
      sink); no credentials then, as they would cross in clear.

    `?from=address` sets the sender. Certificates are checked against the system's trust
    store, or `tls_context` when given.
    """

    def __init__(self, url: str, *, sender: str, timeout: float = 10.0,
                 tls_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"not an smtp:// or smtps:// URL: {parts.scheme}://{parts.hostname}")
        query = parse_qs(parts.query)
        tls = (query.get("tls") or ["starttls"])[0].lower()
        if tls not in _TLS_MODES:
            raise ValueError(f"GATEWAY_SMTP_URL: tls={tls} is not one of "
                             f"{', '.join('tls=' + m for m in _TLS_MODES)}")
        self._is_tls = parts.scheme == "smtps"
        if self._is_tls and tls == "off":
            raise ValueError("GATEWAY_SMTP_URL: smtps:// is always TLS; for plain SMTP on "
                             "purpose use smtp://HOST:PORT?tls=off")
        self._is_plain = tls == "off"
        self._host = parts.hostname
        self._port = parts.port or (465 if self._is_tls else 25)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        if self._is_plain and (self._username or self._password):
            # SECURITY: a password in clear on the wire is refused outright.
            raise ValueError("GATEWAY_SMTP_URL: a user or password in clear with tls=off is "
                             "refused; use smtps:// or smtp:// (STARTTLS)")
        query_from = query.get("from")
        self.sender = query_from[0] if query_from else sender
        self._timeout = timeout
        self._tls_context = tls_context

    def __repr__(self) -> str:
        # SECURITY: the URL's password stays out of logs.
        mode = "smtps" if self._is_tls else "tls=off" if self._is_plain else "starttls"
        return f"SmtpMailer({self._host}:{self._port}, {mode})"

    async def send(self, message: Message) -> None:
        client = aiosmtplib.SMTP(hostname=self._host, port=self._port, use_tls=self._is_tls,
                                 start_tls=False, tls_context=self._tls_context,
                                 timeout=self._timeout)
        try:
            async with client:
                if not self._is_tls and not self._is_plain:
                    await client.ehlo()
                    # SECURITY: STARTTLS is required, not opportunistic: without it, nothing
                    # (the message holds links that act for the user) is sent.
                    if not client.supports_extension("starttls"):
                        raise MailError(
                            f"mail server {self._host}:{self._port} does not offer STARTTLS: "
                            "refusing to send in clear (use smtps:// for TLS from the start, "
                            "or smtp://HOST:PORT?tls=off if plain SMTP is meant)")
                    await client.starttls()
                if self._username is not None:
                    await client.login(self._username, self._password or "")
                await client.send_message(_build(message, self.sender))
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
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
