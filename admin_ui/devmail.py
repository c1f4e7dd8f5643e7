"""Development mail: an aiosmtpd sink that keeps what it receives (its pages: views/devmail).

`gateway dev` runs the sink (port 1025 by default) when no SMTP server is configured; the
admin UI then sends through real SMTP to it, and `/dev/mailbox` (HTML) and
`/dev/mailbox.json` (`[{to, subject, body, date}]`) show the messages, both newest first.
These routes exist only when the app is built with a dev mailbox.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # aiosmtpd is a dev extra: imported only where a sink runs
    from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["MAILBOX_KEY", "DevMailbox", "MailboxEntry", "start_mail_sink"]

_MAX_MESSAGES = 500


@dataclass(frozen=True, slots=True)
class MailboxEntry:
    to: str
    subject: str
    body: str
    date: str


class DevMailbox:
    """The sink's messages, newest first, the oldest dropped past a bound."""

    def __init__(self, limit: int = _MAX_MESSAGES) -> None:
        self._messages: deque[MailboxEntry] = deque(maxlen=limit)
        self._arrived = asyncio.Event()

    @property
    def messages(self) -> list[MailboxEntry]:
        """Newest first."""
        return list(self._messages)

    def add(self, entry: MailboxEntry) -> None:
        self._messages.appendleft(entry)

    def clear(self) -> None:
        self._messages.clear()

    # aiosmtpd's handler hook: called once per received message.
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        parsed = message_from_bytes(data, policy=policy.default)
        body = ""
        if isinstance(parsed, EmailMessage):
            part = parsed.get_body(preferencelist=("plain", "html"))
            body = part.get_content() if part is not None else ""
        body = body.replace("\r\n", "\n")  # SMTP's line endings, not the message's
        self.add(MailboxEntry(
            to=", ".join(envelope.rcpt_tos) or str(parsed.get("To", "")),
            subject=str(parsed.get("Subject", "")),
            body=body,
            date=datetime.now(UTC).isoformat(timespec="seconds"),
        ))
        return "250 Message accepted for delivery"


MAILBOX_KEY: web.AppKey[DevMailbox] = web.AppKey("dev_mailbox", DevMailbox)


async def start_mail_sink(mailbox: DevMailbox, host: str = "127.0.0.1",
                          port: int = 1025) -> asyncio.Server:
    """Serve SMTP into `mailbox` on the running loop; close the returned server to stop."""
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(mailbox, hostname="keygate-dev-mail", loop=loop), host=host, port=port
    )

