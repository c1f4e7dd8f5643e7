"""Two-factor authentication: enable (QR code + first code), recovery codes, disable.

`check_second_factor` is the one place a TOTP or recovery code is accepted: login, key
creation and disabling 2FA all go through it, so they share the replay rule (a time step is
accepted once per user) and the failure limit (shared with passwords, counted before the
check).
"""

from __future__ import annotations

from typing import NamedTuple

import asyncpg
from aiohttp import web

from admin_ui import db, emails
from admin_ui.db import POOL_KEY, AccountRow
from admin_ui.forms import is_recovery_code_shape, is_totp_shape, normalise_code
from admin_ui.render import render
from admin_ui.security import (
    KEYS_KEY,
    format_recovery_code,
    hash_recovery_code,
    login_required,
    match_totp,
    new_recovery_codes,
    new_totp_secret,
    totp_qr_svg,
    totp_uri,
)
from admin_ui.sessions import current_user, redirect, remote_ip
from admin_ui.throttle import THROTTLE_KEY
from gateway.keys.lifecycle import audit

__all__ = ["FactorCheck", "check_second_factor", "totp_page", "totp_post", "wait_text"]


def wait_text(seconds: int) -> str:
    minutes = (seconds + 59) // 60
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _context(account: AccountRow) -> str:
    # The sealed secret is bound to its row (AES-GCM associated data).
    return f"user:{account.id}"


class FactorCheck(NamedTuple):
    """What `check_second_factor` found: the method when the code was good, else a message
    for the user, and `retry_after` seconds when the code was not even checked (throttled)."""

    method: str | None
    error: str | None = None
    retry_after: int | None = None


async def check_second_factor(
    request: web.Request, conn: asyncpg.Connection, account: AccountRow, code: str, *,
    allow_recovery: bool,
) -> FactorCheck:
    """Check a TOTP code (or, with `allow_recovery`, a recovery code). Every attempt is
    counted before it is checked; wrong ones are audited."""
    throttle = request.app[THROTTLE_KEY]
    ip = remote_ip(request)
    wait = await throttle.take_attempt(account.email, ip)
    if wait is not None:
        return FactorCheck(None, f"Too many failed attempts. Try again in {wait_text(wait)}.",
                           wait)
    keys = request.app[KEYS_KEY]
    code = normalise_code(code)
    method: str | None = None
    if is_totp_shape(code) and account.totp_secret_enc:
        secret = keys.totp_box.open(account.totp_secret_enc, _context(account))
        step = None if secret is None else match_totp(secret, code,
                                                      last_step=account.totp_last_step)
        # SECURITY: the step is recorded with a conditional UPDATE: of two requests racing
        # with one code, only one wins (replay refused).
        if step is not None and await db.accept_totp_step(conn, account.id, step):
            method = "totp"
    elif allow_recovery and is_recovery_code_shape(code):
        if await db.use_recovery_code(conn, account.id, hash_recovery_code(keys.recovery, code)):
            method = "recovery"
            remaining = await db.count_recovery_codes(conn, account.id)
            await audit(conn, "2fa.recovery_code_used", actor=f"user:{account.id}",
                        user_id=account.id, client_ip=ip, detail={"remaining": remaining})
            await emails.deliver(request, emails.recovery_code_used_notice(
                request, account.email, remaining=remaining, ip=ip))
    if method is not None:
        await throttle.give_back(account.email, ip)
        return FactorCheck(method)
    await audit(conn, "2fa.failed", actor=f"user:{account.id}", user_id=account.id,
                client_ip=ip)
    hint = " or one of your recovery codes" if allow_recovery else ""
    return FactorCheck(None, "That code is not valid, or was already used. Enter the current "
                             f"6-digit code from your authenticator app{hint}.")


async def _enable_page(request: web.Request, conn: asyncpg.Connection, account: AccountRow,
                       *, error: str | None = None, status: int = 200) -> web.Response:
    box = request.app[KEYS_KEY].totp_box
    secret = box.open(account.totp_secret_enc, _context(account)) \
        if account.totp_secret_enc else None
    if secret is None:
        # A new pending secret, kept until 2FA is on, so a reload shows the same QR code.
        secret = new_totp_secret()
        await db.set_pending_totp(conn, account.id, box.seal(secret, _context(account)))
    uri = totp_uri(secret, account.email)
    return render(request, "totp_enable.html", {
        "secret": secret, "qr_svg": totp_qr_svg(uri), "uri": uri, "error": error,
    }, status=status)


async def _status_page(request: web.Request, conn: asyncpg.Connection, account: AccountRow,
                       *, error: str | None = None, status: int = 200) -> web.Response:
    remaining = await db.count_recovery_codes(conn, account.id)
    return render(request, "totp_status.html", {"remaining": remaining, "error": error},
                  status=status)


@login_required
async def totp_page(request: web.Request) -> web.Response:
    account = current_user(request)
    assert account is not None
    async with request.app[POOL_KEY].acquire() as conn:
        if account.totp_enabled:
            return await _status_page(request, conn, account)
        return await _enable_page(request, conn, account)


@login_required
async def totp_post(request: web.Request) -> web.Response:
    account = current_user(request)
    assert account is not None
    form = await request.post()
    action = str(form.get("action", ""))
    code = str(form.get("totp", ""))
    ip = remote_ip(request)
    async with request.app[POOL_KEY].acquire() as conn:
        if action == "enable" and not account.totp_enabled:
            return await _enable(request, conn, account, code, ip)
        if action == "disable" and account.totp_enabled:
            check = await check_second_factor(request, conn, account, code,
                                              allow_recovery=True)
            if check.method is None:
                return await _status_page(request, conn, account, error=check.error,
                                          status=400 if check.retry_after is None else 429)
            await db.disable_totp(conn, account.id)
            await audit(conn, "2fa.disabled", actor=f"user:{account.id}", user_id=account.id,
                        client_ip=ip)
        else:
            # A stale form (2FA switched in another tab): show the current state.
            return redirect("/settings/2fa")
    await emails.deliver(request, emails.totp_changed_notice(request, account.email,
                                                             is_enabled=False, ip=ip))
    return redirect("/settings/2fa?done=2fa-disabled")


async def _enable(request: web.Request, conn: asyncpg.Connection, account: AccountRow,
                  code: str, ip: str) -> web.Response:
    throttle = request.app[THROTTLE_KEY]
    keys = request.app[KEYS_KEY]
    wait = await throttle.take_attempt(account.email, ip)
    if wait is not None:
        return await _enable_page(request, conn, account, status=429, error=(
            f"Too many failed attempts. Try again in {wait_text(wait)}."))
    secret = keys.totp_box.open(account.totp_secret_enc, _context(account)) \
        if account.totp_secret_enc else None
    step = None if secret is None else match_totp(secret, code, last_step=None)
    if step is None:
        await audit(conn, "2fa.failed", actor=f"user:{account.id}", user_id=account.id,
                    client_ip=ip, detail={"during": "enable"})
        return await _enable_page(request, conn, account, status=400, error=(
            "That code does not match. Check your device's clock and enter the 6-digit code "
            "your authenticator app shows now."))
    await throttle.give_back(account.email, ip)
    codes = new_recovery_codes()
    async with conn.transaction():
        if not await db.enable_totp(conn, account.id, step,
                                    [hash_recovery_code(keys.recovery, c) for c in codes]):
            return redirect("/settings/2fa")
        await audit(conn, "2fa.enabled", actor=f"user:{account.id}", user_id=account.id,
                    client_ip=ip)
    await emails.deliver(request, emails.totp_changed_notice(request, account.email,
                                                             is_enabled=True, ip=ip))
    # SECURITY: the recovery codes exist in clear only in this response (never stored).
    return render(request, "totp_recovery.html",
                  {"codes": [format_recovery_code(c) for c in codes]})
