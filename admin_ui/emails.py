"""The text of every email the admin UI sends. Links come from `GATEWAY_ADMIN_URL` only."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from aiohttp import web

from admin_ui.mail import MAILER_KEY, MailError, Message
from admin_ui.settings import SETTINGS_KEY

__all__ = [
    "admin_link",
    "deliver",
    "duration_text",
    "key_activated_notice",
    "key_addresses_confirmation",
    "key_confirmation",
    "key_deleted_notice",
    "key_roll_confirmation",
    "password_changed_notice",
    "password_reset",
    "recovery_code_used_notice",
    "signup_existing",
    "totp_changed_notice",
    "verify_email",
]

log = logging.getLogger(__name__)


def admin_link(request: web.Request, path: str) -> str:
    # SECURITY: built from the configured public URL, never from the request's Host header,
    # so a forged Host cannot point an emailed link at another site.
    return request.app[SETTINGS_KEY].admin_url.rstrip("/") + path


def duration_text(seconds: float) -> str:
    """`1800` -> `30 minutes`, `86400` -> `24 hours`."""
    if seconds >= 7200 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} hours"
    if seconds >= 120:
        return f"{round(seconds / 60)} minutes"
    return f"{round(seconds)} seconds"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


async def deliver(request: web.Request, message: Message) -> bool:
    """Send; False (logged, without the body) when the mail server refused."""
    try:
        await request.app[MAILER_KEY].send(message)
    except MailError as exc:
        log.error("mail to %s (%r) failed: %s", message.to, message.subject, exc)
        return False
    return True


_FOOTER = "\n-- \nKeygate. This message was sent automatically; replies are not read.\n"


def verify_email(request: web.Request, to: str, token: str) -> Message:
    ttl = duration_text(request.app[SETTINGS_KEY].verify_link_ttl)
    return Message(to, "Confirm your email address for Keygate", (
        "Hello,\n\n"
        "Someone (hopefully you) signed up for Keygate with this address. To confirm it, "
        f"open this link within {ttl}:\n\n"
        f"{admin_link(request, f'/verify/{token}')}\n\n"
        "If it was not you, ignore this email: the account cannot be used without it.\n"
        + _FOOTER))


def signup_existing(request: web.Request, to: str) -> Message:
    return Message(to, "Sign-up attempt with your Keygate address", (
        "Hello,\n\n"
        f"Someone tried to sign up for Keygate with this address on {_now()}, but you "
        "already have an account. Nothing was changed.\n\n"
        f"Log in: {admin_link(request, '/login')}\n"
        f"Forgot your password? {admin_link(request, '/password/forgot')}\n"
        + _FOOTER))


def password_reset(request: web.Request, to: str, token: str, ip: str) -> Message:
    ttl = duration_text(request.app[SETTINGS_KEY].reset_link_ttl)
    return Message(to, "Reset your Keygate password", (
        "Hello,\n\n"
        f"A password reset was requested for your Keygate account from {ip} on {_now()}. "
        f"To choose a new password, open this link within {ttl}:\n\n"
        f"{admin_link(request, f'/password/reset/{token}')}\n\n"
        "If you did not ask for this, ignore this email: your password stays as it is.\n"
        + _FOOTER))


def password_changed_notice(request: web.Request, to: str, ip: str) -> Message:
    return Message(to, "Security notice: your Keygate password was changed", (
        "Hello,\n\n"
        f"The password of your Keygate account was changed from {ip} on {_now()}, and every "
        "session was logged out. If this was not you, reset your password now:\n\n"
        f"{admin_link(request, '/password/forgot')}\n"
        + _FOOTER))


def _key_lines(key_id: str, name: str, permissions: Sequence[str], ips: Sequence[str]) -> str:
    return (f"  Name:         {name}\n"
            f"  Key id:       {key_id}\n"
            f"  Permissions:  {', '.join(permissions)}\n"
            f"  IP addresses: {', '.join(ips) if ips else 'any'}\n")


def key_confirmation(request: web.Request, to: str, token: str, *, key_id: str, name: str,
                     permissions: Sequence[str], ips: Sequence[str], ip: str) -> Message:
    ttl = duration_text(request.app[SETTINGS_KEY].confirm_link_ttl)
    return Message(to, f"Confirm your new API key \u201c{name}\u201d", (
        "Hello,\n\n"
        f"A new API key was requested for your Keygate account from {ip} on {_now()}:\n\n"
        + _key_lines(key_id, name, permissions, ips) +
        f"\nTo activate it, open this link within {ttl}, logged in to Keygate. The key's "
        "secret is shown once, on the page the link opens:\n\n"
        f"{admin_link(request, f'/keys/confirm/{token}')}\n\n"
        "Only the most recent link sent for a key works. If you did not request this key, "
        f"do not open the link: delete the key at {admin_link(request, '/keys')} and change "
        "your password.\n" + _FOOTER))


def key_activated_notice(request: web.Request, to: str, *, key_id: str, name: str,
                         ip: str) -> Message:
    return Message(to, f"Security notice: API key \u201c{name}\u201d is active", (
        "Hello,\n\n"
        f"The API key \u201c{name}\u201d ({key_id}) of your Keygate account was confirmed "
        f"from {ip} on {_now()} and can now be used.\n\n"
        "If this was not you, delete the key at once and change your password:\n\n"
        f"{admin_link(request, '/keys')}\n" + _FOOTER))


def key_deleted_notice(request: web.Request, to: str, *, key_id: str, name: str,
                       ip: str) -> Message:
    return Message(to, f"Security notice: API key \u201c{name}\u201d was deleted", (
        "Hello,\n\n"
        f"The API key \u201c{name}\u201d ({key_id}) of your Keygate account was deleted from "
        f"{ip} on {_now()}. Every gateway refuses it from now on; this cannot be undone.\n\n"
        "If this was not you, change your password and check your keys:\n\n"
        f"{admin_link(request, '/keys')}\n" + _FOOTER))


def totp_changed_notice(request: web.Request, to: str, *, is_enabled: bool,
                        ip: str) -> Message:
    state = "turned on" if is_enabled else "turned off"
    return Message(to, f"Security notice: two-factor authentication {state}", (
        "Hello,\n\n"
        f"Two-factor authentication was {state} for your Keygate account from {ip} on "
        f"{_now()}.\n\n"
        "If this was not you, change your password now and review your account:\n\n"
        f"{admin_link(request, '/settings/2fa')}\n" + _FOOTER))


def recovery_code_used_notice(request: web.Request, to: str, *, remaining: int,
                              ip: str) -> Message:
    return Message(to, "Security notice: a recovery code was used", (
        "Hello,\n\n"
        f"One of your Keygate recovery codes was used from {ip} on {_now()}; {remaining} "
        "remain. If this was not you, change your password and turn two-factor "
        "authentication off and on again to get new codes:\n\n"
        f"{admin_link(request, '/settings/2fa')}\n" + _FOOTER))


# --- key lifecycle -------------------------------------------------------------------------


def key_roll_confirmation(request: web.Request, to: str, token: str, *, old_key_id: str,
                          new_key_id: str, name: str, overlap: str, ip: str) -> Message:
    ttl = duration_text(request.app[SETTINGS_KEY].confirm_link_ttl)
    return Message(to, f"Confirm the roll of your API key \u201c{name}\u201d", (
        "Hello,\n\n"
        f"A roll of the API key \u201c{name}\u201d ({old_key_id}) was requested for your Keygate "
        f"account from {ip} on {_now()}: a new key ({new_key_id}) with the same settings "
        f"replaces it, and the old key keeps working for {overlap} after you confirm.\n\n"
        f"To confirm, open this link within {ttl}, logged in to Keygate. The new key's secret "
        "is shown once, on the page the link opens:\n\n"
        f"{admin_link(request, f'/keys/confirm/{token}')}\n\n"
        "Only the most recent link sent for a key works. If you did not request this, do not "
        f"open the link: delete the pending key at {admin_link(request, '/keys')} and change "
        "your password.\n" + _FOOTER))


def key_addresses_confirmation(request: web.Request, to: str, token: str, *, key_id: str,
                               name: str, addresses: Sequence[str], cooldown: str,
                               ip: str) -> Message:
    ttl = duration_text(request.app[SETTINGS_KEY].confirm_link_ttl)
    listed = "".join(f"  {address}\n" for address in addresses)
    return Message(to, f"Confirm new withdrawal addresses for \u201c{name}\u201d", (
        "Hello,\n\n"
        f"New withdrawal addresses for the API key \u201c{name}\u201d ({key_id}) were requested "
        f"from {ip} on {_now()}:\n\n{listed}\n"
        f"To allow them, open this link within {ttl}, logged in to Keygate. They can be used "
        f"{cooldown} after you confirm:\n\n"
        f"{admin_link(request, f'/keys/confirm/{token}')}\n\n"
        "If you did not request this, do not open the link: someone may have your password. "
        f"Change it at once and check your keys at {admin_link(request, '/keys')}.\n" + _FOOTER))
