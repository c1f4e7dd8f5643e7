"""API keys: the list, the create form, the emailed confirmation link, resend, delete, and
the lifecycle pages: roll, withdrawal addresses, usage.

A key is created pending; the emailed link (single use, 30 minutes, only the newest works)
activates it for its logged-in owner, and that page is the only place its token is shown.
A roll is a new pending key confirmed the same way; confirming it starts the old key's
overlap. Addresses added to a live key also wait for an emailed link, then a cooldown.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from admin_ui import db, emails
from admin_ui.db import POOL_KEY, AccountRow
from admin_ui.forms import (
    MAX_EXPIRY_DAYS,
    MAX_KEY_NAME,
    MAX_OVERLAP_HOURS,
    validate_address_form,
    validate_key_form,
    validate_roll_form,
)
from admin_ui.permissions import PERMISSIONS_KEY
from admin_ui.render import render
from admin_ui.security import login_required
from admin_ui.sessions import current_user, redirect, remote_ip
from admin_ui.settings import SETTINGS_KEY
from admin_ui.throttle import THROTTLE_KEY
from admin_ui.tokens import LinkState, hash_link_token, is_link_token, link_state, new_link_token
from admin_ui.usage_chart import HOURS, build_usage_chart
from admin_ui.views.totp import check_second_factor
from gateway.keys.addresses import MAX_WITHDRAW_ADDRESSES
from gateway.keys.lifecycle import (
    Activated,
    AddressesConfirmed,
    KeyInfo,
    KeyNotFound,
    PolicyRefused,
    activate,
    audit,
    confirm_addresses,
    create_key,
    delete_key,
    request_addresses,
    roll_key,
)
from gateway.keys.lifecycle import list_keys as lifecycle_list_keys
from gateway.keys.policy import LIFETIME_FIELD
from gateway.keys.tokens import is_key_id
from gateway.store.errors import REDIS_ERRORS
from gateway.store.redis import RedisKeyCache

__all__ = ["CACHE_KEY",
    "addresses_page",
    "addresses_post",
    "confirm_key",
    "delete_key_page",
    "delete_key_post",
    "key_sent",
    "keys_page",
    "new_key_page",
    "new_key_post",
    "resend_key",
    "roll_key_page",
    "roll_key_post",
    "usage_page",
]

CACHE_KEY: web.AppKey[RedisKeyCache] = web.AppKey("key_cache", RedisKeyCache)

log = logging.getLogger(__name__)


def _user(request: web.Request) -> AccountRow:
    account = current_user(request)
    assert account is not None, "login_required guards this view"
    return account


async def _own_key(request: web.Request, account: AccountRow) -> KeyInfo | None:
    """The path's key when it belongs to `account` and is not deleted."""
    key_id = request.match_info["key_id"]
    if not is_key_id(key_id):
        return None
    async with request.app[POOL_KEY].acquire() as conn:
        keys = await lifecycle_list_keys(conn, account.id)
    return next((k for k in keys if k.key_id == key_id), None)


async def _own_active_key(request: web.Request, account: AccountRow) -> KeyInfo | None:
    """`_own_key`, when it is active (what rolling and adding addresses need)."""
    key = await _own_key(request, account)
    return key if key is not None and key.status == "active" else None


async def _posted(request: web.Request, *names: str) -> dict[str, list[str]]:
    """Each named field's text values, as the form sent them (repeated fields included)."""
    form = await request.post()
    return {name: [v for v in form.getall(name, []) if isinstance(v, str)] for name in names}


def _not_found(request: web.Request) -> web.Response:
    return render(request, "error.html", {
        "title": "Key not found",
        "message": "There is no such key in your account (it may have been deleted).",
    }, status=404)


def _is_prefetch(request: web.Request) -> bool:
    purpose = (request.headers.get("Sec-Purpose", "") + request.headers.get("Purpose", "")
               + request.headers.get("X-Moz", "")).lower()
    return "prefetch" in purpose or "prerender" in purpose


@login_required
async def keys_page(request: web.Request) -> web.Response:
    account = _user(request)
    async with request.app[POOL_KEY].acquire() as conn:
        keys = await lifecycle_list_keys(conn, account.id)
    limit = request.app[SETTINGS_KEY].max_keys_per_user
    return render(request, "keys.html", {"keys": keys, "limit": limit,
                                         "is_full": len(keys) >= limit,
                                         "now": datetime.now(UTC)})


def _form_page(request: web.Request, account: AccountRow, *, values: dict[str, Any],
               errors: dict[str, str], is_full: bool = False, status: int = 200
               ) -> web.Response:
    catalog = request.app[PERMISSIONS_KEY]
    return render(request, "key_new.html", {
        "permissions": catalog.permissions, "needs_ips": sorted(catalog.require_ip_allowlist),
        "values": values, "errors": errors, "needs_totp": account.totp_enabled,
        "max_name": MAX_KEY_NAME, "is_full": is_full,
        "limit": request.app[SETTINGS_KEY].max_keys_per_user,
        "max_days": catalog.policy.max_key_lifetime_days or MAX_EXPIRY_DAYS,
        "needs_expiry": catalog.policy.max_key_lifetime_days is not None,
        "max_addresses": MAX_WITHDRAW_ADDRESSES,
    }, status=status)


@login_required
async def new_key_page(request: web.Request) -> web.Response:
    account = _user(request)
    async with request.app[POOL_KEY].acquire() as conn:
        count = await db.count_live_keys(conn, account.id)
    is_full = count >= request.app[SETTINGS_KEY].max_keys_per_user
    return _form_page(request, account, values={"permissions": []}, errors={},
                      is_full=is_full)


@login_required
async def new_key_post(request: web.Request) -> web.Response:
    account = _user(request)
    settings = request.app[SETTINGS_KEY]
    catalog = request.app[PERMISSIONS_KEY]
    fields = await _posted(request, "name", "permissions", "ips", "totp", "expires_in_days",
                           "withdraw_addresses")
    values = {"name": (fields["name"] or [""])[0], "permissions": fields["permissions"],
              "ips": "\n".join(fields["ips"]),
              "expires_in_days": (fields["expires_in_days"] or [""])[0],
              "withdraw_addresses": "\n".join(fields["withdraw_addresses"])}
    policy = catalog.policy
    wanted, errors = validate_key_form(fields, catalog.names, needs_totp=account.totp_enabled,
                                       policy=policy)
    if wanted is None:
        return _form_page(request, account, values=values, errors=errors, status=400)
    ip = remote_ip(request)
    async with request.app[POOL_KEY].acquire() as conn:
        if wanted.totp is not None:
            check = await check_second_factor(request, conn, account, wanted.totp,
                                              allow_recovery=False)
            if check.method is None:
                return _form_page(request, account, values=values,
                                  errors={"totp": check.error or ""},
                                  status=400 if check.retry_after is None else 429)
        token, token_hash = new_link_token()
        async with conn.transaction():
            # The row lock serialises one user's concurrent creations: the limit holds.
            await db.lock_account(conn, account.id)
            if await db.count_live_keys(conn, account.id) >= settings.max_keys_per_user:
                return _form_page(request, account, values=values, is_full=True, status=400,
                                  errors={"name": f"You already have {settings.max_keys_per_user}"
                                          " keys, the most an account may have. Delete one "
                                          "first."})
            try:
                key_id = await create_key(
                    conn, user_id=account.id, name=wanted.name, permissions=wanted.permissions,
                    allowed_ips=wanted.ips, actor=f"user:{account.id}", client_ip=ip,
                    lifetime=wanted.lifetime, withdraw_addresses=wanted.withdraw_addresses,
                    policy=policy)
            except PolicyRefused as exc:  # the route file changed since the form was checked
                return _form_page(request, account, values=values, status=400,
                                  errors=_form_fields(exc.problems))
            await db.insert_confirmation(conn, key_id, token_hash, settings.confirm_link_ttl)
    is_sent = await emails.deliver(request, emails.key_confirmation(
        request, account.email, token, key_id=key_id, name=wanted.name,
        permissions=wanted.permissions, ips=[str(a) for a in wanted.ips], ip=ip))
    return redirect(f"/keys/{key_id}/sent" + ("" if is_sent else "?failed=1"))


@login_required
async def key_sent(request: web.Request) -> web.Response:
    key = await _own_key(request, _user(request))
    if key is None:
        return _not_found(request)
    if key.status != "pending":
        return redirect("/keys")
    return render(request, "key_sent.html", {
        "key": key, "is_failed": "failed" in request.query,
        "is_resent": "resent" in request.query, "is_limited": "limited" in request.query,
        "ttl": emails.duration_text(request.app[SETTINGS_KEY].confirm_link_ttl),
    })


@login_required
async def resend_key(request: web.Request) -> web.Response:
    account = _user(request)
    key = await _own_key(request, account)
    if key is None:
        return _not_found(request)
    if key.status != "pending":
        return redirect("/keys")
    if not await request.app[THROTTLE_KEY].allow_mail("resend", key.key_id):
        return redirect(f"/keys/{key.key_id}/sent?limited=1")
    ip = remote_ip(request)
    token, token_hash = new_link_token()
    async with request.app[POOL_KEY].acquire() as conn, conn.transaction():
        # Every earlier link for this key stops working here.
        await db.insert_confirmation(conn, key.key_id, token_hash,
                                     request.app[SETTINGS_KEY].confirm_link_ttl)
        await audit(conn, "key.link_resent", actor=f"user:{account.id}", user_id=account.id,
                    key_id=key.key_id, client_ip=ip)
    message = (emails.key_roll_confirmation(
        request, account.email, token, old_key_id=key.rolled_from, new_key_id=key.key_id,
        name=key.name, overlap=_overlap_text((key.roll_overlap or 0) / 3600), ip=ip)
        if key.rolled_from is not None else emails.key_confirmation(
        request, account.email, token, key_id=key.key_id, name=key.name,
        permissions=key.permissions, ips=key.allowed_ips, ip=ip))
    is_sent = await emails.deliver(request, message)
    return redirect(f"/keys/{key.key_id}/sent?" + ("resent=1" if is_sent else "failed=1"))


@login_required
async def confirm_key(request: web.Request) -> web.Response:
    """The emailed link. Only its logged-in owner gets here with effect (others are sent to
    log in first by `login_required`), so a mail scanner opening it changes nothing."""
    if _is_prefetch(request):
        # SECURITY: a speculative load must not spend the one view of the key.
        return web.Response(status=503, text="Open this link directly.",
                            headers={"Cache-Control": "no-store"})
    account = _user(request)
    token = request.match_info["token"]
    settings = request.app[SETTINGS_KEY]
    ip = remote_ip(request)
    state, found = LinkState.UNKNOWN, None
    activated: Activated | None = None
    added: AddressesConfirmed | None = None
    async with request.app[POOL_KEY].acquire() as conn, conn.transaction():
        found = (await db.find_confirmation(conn, hash_link_token(token), for_update=True)
                 if is_link_token(token) else None)
        if found is not None and found.link.user_id != account.id:
            # Not this account's link: nothing is used up; the owner can still open it.
            return render(request, "link_problem.html",
                          {"kind": "confirm", "state": "other-account"}, status=403)
        if found is not None:
            state = link_state(used_at=found.link.used_at,
                               superseded_at=found.link.superseded_at,
                               expires_at=found.link.expires_at, now=found.link.now)
            if found.key_status == "deleted" and state is not LinkState.USED:
                state = LinkState.SUPERSEDED
        if found is not None and state is LinkState.VALID:
            if not await db.mark_confirmation_used(conn, found.link.id):
                state = LinkState.USED
            elif found.purpose == "addresses":
                added = await confirm_addresses(
                    conn, found.key_id, found.link.id,
                    cooldown=settings.withdraw_address_cooldown,
                    actor=f"user:{account.id}", user_id=account.id, client_ip=ip)
            else:
                try:
                    # The Redis step runs after commit, below: no cache refill can race it.
                    activated = await activate(
                        conn, found.key_id, pepper=settings.key_pepper or "",
                        hash_version=settings.key_pepper_version, actor=f"user:{account.id}",
                        client_ip=ip)
                except KeyNotFound:
                    state = LinkState.USED
    if found is None or (activated is None and added is None):
        return render(request, "link_problem.html", {
            "kind": "confirm", "state": state.value,
            "key_status": found.key_status if found else None,
            "key_id": found.key_id if found else None,
        }, status=404 if state is LinkState.UNKNOWN else 410)
    await _invalidate(request, found.key_id)
    if added is not None:
        return render(request, "key_addresses_confirmed.html", {
            "key_id": found.key_id, "key_name": found.key_name, "added": added})
    assert activated is not None
    if activated.rolled_from is not None:
        await _invalidate(request, activated.rolled_from)
    await emails.deliver(request, emails.key_activated_notice(
        request, account.email, key_id=found.key_id, name=found.key_name, ip=ip))
    # SECURITY: the token exists only in this response (no-store: not kept by the browser).
    return render(request, "key_shown.html", {
        "api_key": activated.token, "key_id": found.key_id, "key_name": found.key_name,
        "rolled_from": activated.rolled_from, "old_expires_at": activated.old_expires_at,
    })


async def _invalidate(request: web.Request, key_id: str) -> None:
    """Tell every gateway at once; PostgreSQL's NOTIFY already did if Redis is down."""
    try:
        await request.app[CACHE_KEY].invalidate(key_id, deleted=False)
    except REDIS_ERRORS as exc:
        log.warning("redis invalidation of key %s failed: %r", key_id, exc)


@login_required
async def delete_key_page(request: web.Request) -> web.Response:
    """The confirmation without JavaScript (with it, the keys page's dialog does this)."""
    key = await _own_key(request, _user(request))
    if key is None:
        return _not_found(request)
    return render(request, "key_delete.html", {"key": key})


@login_required
async def delete_key_post(request: web.Request) -> web.Response:
    account = _user(request)
    key_id = request.match_info["key_id"]
    if not is_key_id(key_id):
        return _not_found(request)
    ip = remote_ip(request)
    async with request.app[POOL_KEY].acquire() as conn:
        owner = await db.get_key_owner(conn, key_id)
        try:
            # Commits in PostgreSQL (NOTIFY to every gateway), then tombstones and publishes
            # in Redis: the key is refused everywhere at once, for good.
            await delete_key(conn, key_id, actor=f"user:{account.id}", user_id=account.id,
                             client_ip=ip, cache=request.app[CACHE_KEY])
        except KeyNotFound:
            return _not_found(request)
    name = owner[2] if owner else key_id
    await emails.deliver(request, emails.key_deleted_notice(
        request, account.email, key_id=key_id, name=name, ip=ip))
    return redirect("/keys?done=deleted")


def _form_fields(problems: dict[str, str]) -> dict[str, str]:
    """Policy problems under the form's field names."""
    return {("expires_in_days" if field == LIFETIME_FIELD else field): text
            for field, text in problems.items()}


def _overlap_text(hours: float) -> str:
    return "no time at all (it stops at once)" if hours == 0 else \
        emails.duration_text(hours * 3600)


def _roll_page(request: web.Request, account: AccountRow, key: KeyInfo, *,
               values: dict[str, str], errors: dict[str, str], status: int = 200
               ) -> web.Response:
    return render(request, "key_roll.html", {
        "key": key, "values": values, "errors": errors, "needs_totp": account.totp_enabled,
        "max_overlap": MAX_OVERLAP_HOURS,
        "ttl": emails.duration_text(request.app[SETTINGS_KEY].confirm_link_ttl),
    }, status=status)


@login_required
async def roll_key_page(request: web.Request) -> web.Response:
    account = _user(request)
    key = await _own_active_key(request, account)
    if key is None:
        return _not_found(request)
    return _roll_page(request, account, key, values={"overlap_hours": "24"}, errors={})


@login_required
async def roll_key_post(request: web.Request) -> web.Response:
    """A new pending key with the old one's settings, confirmed by email like a new key."""
    account = _user(request)
    key = await _own_active_key(request, account)
    if key is None:
        return _not_found(request)
    settings = request.app[SETTINGS_KEY]
    fields = await _posted(request, "overlap_hours", "totp")
    values = {"overlap_hours": (fields["overlap_hours"] or [""])[0]}
    wanted, errors = validate_roll_form(fields, needs_totp=account.totp_enabled)
    if wanted is None:
        return _roll_page(request, account, key, values=values, errors=errors, status=400)
    ip = remote_ip(request)
    async with request.app[POOL_KEY].acquire() as conn:
        if wanted.totp is not None:
            check = await check_second_factor(request, conn, account, wanted.totp,
                                              allow_recovery=False)
            if check.method is None:
                return _roll_page(request, account, key, values=values,
                                  errors={"totp": check.error or ""},
                                  status=400 if check.retry_after is None else 429)
        token, token_hash = new_link_token()
        async with conn.transaction():
            await db.lock_account(conn, account.id)
            if await db.count_live_keys(conn, account.id) >= settings.max_keys_per_user:
                return _roll_page(request, account, key, values=values, status=400, errors={
                    "overlap_hours": f"You already have {settings.max_keys_per_user} keys, "
                                     "the most an account may have; a roll needs room for "
                                     "one more. Delete one first."})
            try:
                new_id = await roll_key(conn, key.key_id, overlap=wanted.overlap_hours * 3600,
                                        actor=f"user:{account.id}", user_id=account.id,
                                        client_ip=ip, policy=request.app[PERMISSIONS_KEY].policy)
            except KeyNotFound:
                return _not_found(request)
            except PolicyRefused as exc:
                return _roll_page(request, account, key, values=values, status=400,
                                  errors={"overlap_hours": str(exc)})
            await db.insert_confirmation(conn, new_id, token_hash, settings.confirm_link_ttl)
    is_sent = await emails.deliver(request, emails.key_roll_confirmation(
        request, account.email, token, old_key_id=key.key_id, new_key_id=new_id,
        name=key.name, overlap=_overlap_text(wanted.overlap_hours), ip=ip))
    return redirect(f"/keys/{new_id}/sent" + ("" if is_sent else "?failed=1"))


def _addresses_page(request: web.Request, account: AccountRow, key: KeyInfo, *,
                    values: dict[str, str], errors: dict[str, str], status: int = 200
                    ) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    return render(request, "key_addresses.html", {
        "key": key, "values": values, "errors": errors, "needs_totp": account.totp_enabled,
        "max_addresses": MAX_WITHDRAW_ADDRESSES, "now": datetime.now(UTC),
        "cooldown": emails.duration_text(settings.withdraw_address_cooldown),
        "ttl": emails.duration_text(settings.confirm_link_ttl),
        "is_sent": "sent" in request.query, "is_failed": "failed" in request.query,
        "is_limited": "limited" in request.query,
    }, status=status)


@login_required
async def addresses_page(request: web.Request) -> web.Response:
    account = _user(request)
    key = await _own_active_key(request, account)
    if key is None:
        return _not_found(request)
    return _addresses_page(request, account, key, values={}, errors={})


@login_required
async def addresses_post(request: web.Request) -> web.Response:
    """Addresses for a live key: 2FA code, then an emailed link, then the cooldown."""
    account = _user(request)
    key = await _own_active_key(request, account)
    if key is None:
        return _not_found(request)
    settings = request.app[SETTINGS_KEY]
    fields = await _posted(request, "withdraw_addresses", "totp")
    values = {"withdraw_addresses": "\n".join(fields["withdraw_addresses"])}
    wanted, errors = validate_address_form(
        fields, needs_totp=account.totp_enabled,
        already=[a.address for a in key.withdraw_addresses])
    if wanted is None:
        return _addresses_page(request, account, key, values=values, errors=errors,
                               status=400)
    ip = remote_ip(request)
    async with request.app[POOL_KEY].acquire() as conn:
        if wanted.totp is not None:
            check = await check_second_factor(request, conn, account, wanted.totp,
                                              allow_recovery=False)
            if check.method is None:
                return _addresses_page(request, account, key, values=values,
                                       errors={"totp": check.error or ""},
                                       status=400 if check.retry_after is None else 429)
        if not await request.app[THROTTLE_KEY].allow_mail("addresses", key.key_id):
            return redirect(f"/keys/{key.key_id}/addresses?limited=1")
        token, token_hash = new_link_token()
        async with conn.transaction():
            # Every earlier link for this key stops working here; what it was waiting for
            # waits for this one.
            link_id = await db.insert_confirmation(conn, key.key_id, token_hash,
                                                   settings.confirm_link_ttl, "addresses")
            await request_addresses(conn, key.key_id, wanted.addresses, confirmation_id=link_id,
                                    actor=f"user:{account.id}", user_id=account.id,
                                    client_ip=ip)
    pending = [a.address for a in key.withdraw_addresses if a.usable_from is None]
    is_sent = await emails.deliver(request, emails.key_addresses_confirmation(
        request, account.email, token, key_id=key.key_id, name=key.name,
        addresses=[*pending, *wanted.addresses],
        cooldown=emails.duration_text(settings.withdraw_address_cooldown), ip=ip))
    return redirect(f"/keys/{key.key_id}/addresses?" + ("sent=1" if is_sent else "failed=1"))


@login_required
async def usage_page(request: web.Request) -> web.Response:
    """Requests and refusals per hour over the last 7 days, as a chart and a table."""
    account = _user(request)
    key = await _own_key(request, account)
    if key is None:
        return _not_found(request)
    async with request.app[POOL_KEY].acquire() as conn:
        rows = await db.key_usage(conn, key.key_id, HOURS)
    chart = build_usage_chart(rows, datetime.now(UTC))
    return render(request, "key_usage.html", {"key": key, "chart": chart})
