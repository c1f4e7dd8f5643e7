"""Accounts: sign up, verify the email, log in (password, then the second factor), log out,
reset a forgotten password.

Sign-up and the reset form answer the same, in the same time, whether or not an address has
an account (the owner learns the rest by email), so neither tells a stranger who is
registered. Both are limited per client IP.
"""

from __future__ import annotations

from aiohttp import web

from admin_ui import db, emails
from admin_ui.background import BACKGROUND_KEY
from admin_ui.db import POOL_KEY, AccountRow, LinkRow
from admin_ui.forms import (
    Fields,
    safe_next,
    validate_credentials,
    validate_new_password,
)
from admin_ui.render import render
from admin_ui.sessions import (
    current_user,
    end_session,
    partial_user,
    redirect,
    remote_ip,
    start_session,
)
from admin_ui.settings import SETTINGS_KEY
from admin_ui.throttle import THROTTLE_KEY
from admin_ui.tokens import LinkState, hash_link_token, is_link_token, link_state, new_link_token
from admin_ui.views.totp import check_second_factor, wait_text
from gateway.keys.accounts import (
    AccountError,
    hash_password,
    hash_password_off_loop,
    insert_user,
    verify_password_off_loop,
)
from gateway.keys.lifecycle import audit

__all__ = [
    "forgot_page",
    "forgot_post",
    "home",
    "login_page",
    "login_post",
    "logout_page",
    "logout_post",
    "reset_page",
    "reset_post",
    "signup_page",
    "signup_post",
    "verify_email",
]

# Verified against when the email is unknown, so a wrong address costs as long as a wrong
# password (no timing oracle for who has an account).
_DUMMY_HASH = hash_password("keygate-timing-equaliser")


async def _fields(request: web.Request) -> dict[str, list[str]]:
    form = await request.post()
    out: dict[str, list[str]] = {}
    for name, value in form.items():
        if isinstance(value, str):
            out.setdefault(name, []).append(value)
    return out


def _first(fields: Fields, name: str) -> str:
    values = fields.get(name) or ()
    return values[0] if values else ""


async def home(request: web.Request) -> web.Response:
    return redirect("/keys" if current_user(request) else "/login")


# --- sign up -----------------------------------------------------------------------------


async def signup_page(request: web.Request) -> web.Response:
    if current_user(request):
        return redirect("/keys")
    return render(request, "signup.html", {"errors": {}, "email": ""})


def _too_many(request: web.Request, template: str, context: dict[str, object],
              wait: int) -> web.Response:
    response = render(request, template, context, status=429)
    response.headers["Retry-After"] = str(wait)
    return response


async def signup_post(request: web.Request) -> web.Response:
    fields = await _fields(request)
    credentials, errors = validate_credentials(fields, is_new=True)
    if credentials is None:
        return render(request, "signup.html",
                      {"errors": errors, "email": _first(fields, "email")}, status=400)
    settings = request.app[SETTINGS_KEY]
    ip = remote_ip(request)
    wait = await request.app[THROTTLE_KEY].take_request(
        "signup", ip, settings.signup_ip_limit, settings.signup_ip_window)
    if wait is not None:
        return _too_many(request, "signup.html", {"email": credentials.email, "errors": {
            "email": f"Too many sign-ups from your network. Try again in {wait_text(wait)}."}},
            wait)
    # SECURITY: the password is hashed whether or not the address is taken, so both answers
    # cost the same (no timing oracle); in the hashing threads, off the event loop.
    password_hash = await hash_password_off_loop(credentials.password)
    message = None
    async with request.app[POOL_KEY].acquire() as conn:
        existing = await db.get_account_by_email(conn, credentials.email)
        if existing is None:
            try:
                user_id = await insert_user(conn, credentials.email, password_hash)
            except AccountError:
                existing = await db.get_account_by_email(conn, credentials.email)
            else:
                token, token_hash = new_link_token()
                await db.insert_account_link(conn, user_id, "verify", token_hash,
                                             settings.verify_link_ttl)
                await audit(conn, "signup", actor=f"user:{user_id}", user_id=user_id,
                            client_ip=ip)
                message = emails.verify_email(request, credentials.email, token)
        if existing is not None:
            # The owner hears of the attempt; the visitor sees the usual page.
            await audit(conn, "signup.existing", actor="anonymous", user_id=existing.id,
                        client_ip=ip)
            message = emails.signup_existing(request, existing.email)
    assert message is not None
    # Over the limit the page reads the same; only the flood of mail stops.
    is_sent = True
    if await request.app[THROTTLE_KEY].allow_mail("signup", credentials.email):
        is_sent = await emails.deliver(request, message)
    return render(request, "signup_sent.html", {"email": credentials.email, "is_sent": is_sent})


async def verify_email(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    state = LinkState.UNKNOWN
    async with request.app[POOL_KEY].acquire() as conn:
        link = (await db.find_account_link(conn, "verify", hash_link_token(token))
                if is_link_token(token) else None)
        if link is not None:
            state = link_state(used_at=link.used_at, superseded_at=link.superseded_at,
                               expires_at=link.expires_at, now=link.now)
        if link is not None and state is LinkState.VALID:
            async with conn.transaction():
                if await db.mark_account_link_used(conn, link.id):
                    await db.mark_email_verified(conn, link.user_id)
                    await audit(conn, "email.verified", actor=f"user:{link.user_id}",
                                user_id=link.user_id, client_ip=remote_ip(request))
                else:
                    state = LinkState.USED
    if state is LinkState.VALID:
        return redirect("/login?done=verified")
    return render(request, "link_problem.html", {"kind": "verify", "state": state.value},
                  status=410 if state is not LinkState.UNKNOWN else 404)


# --- log in / out ------------------------------------------------------------------------


def _login_form(request: web.Request, *, email: str = "", error: str | None = None,
                status: int = 200, next_path: str | None = None) -> web.Response:
    return render(request, "login.html", {
        "email": email, "error": error,
        "next": safe_next(next_path or request.query.get("next")),
    }, status=status)


def _totp_form(request: web.Request, *, error: str | None = None, status: int = 200,
               next_path: str | None = None) -> web.Response:
    return render(request, "login_totp.html", {
        "error": error, "next": safe_next(next_path or request.query.get("next")),
    }, status=status)


async def login_page(request: web.Request) -> web.Response:
    if current_user(request):
        return redirect(safe_next(request.query.get("next")))
    if partial_user(request):
        return _totp_form(request)
    return _login_form(request)


async def login_post(request: web.Request) -> web.Response:
    fields = await _fields(request)
    next_path = safe_next(_first(fields, "next"))
    pending = partial_user(request)
    if pending is not None and "email" not in fields:
        return await _second_step(request, pending, _first(fields, "totp"), next_path)

    credentials, errors = validate_credentials(fields, is_new=False)
    email = _first(fields, "email")
    if credentials is None:
        return _login_form(request, email=email, status=400, next_path=next_path,
                           error=" ".join(errors.values()))
    throttle = request.app[THROTTLE_KEY]
    ip = remote_ip(request)
    # SECURITY: counted before the check, so parallel guesses cannot outrun the limit.
    wait = await throttle.take_attempt(credentials.email, ip)
    if wait is not None:
        return _login_form(request, email=email, status=429, next_path=next_path, error=(
            f"Too many failed attempts. Try again in {wait_text(wait)}, or reset your "
            "password."))
    async with request.app[POOL_KEY].acquire() as conn:
        account = await db.get_account_by_email(conn, credentials.email)
        # SECURITY: argon2 runs whether or not the account exists (no timing oracle); in the
        # hashing threads, as its deliberate slowness would otherwise stall every request.
        is_good = await verify_password_off_loop(
            account.password_hash if account else _DUMMY_HASH, credentials.password)
        if account is None or not is_good:
            if account is not None:
                await audit(conn, "login.failed", actor=f"user:{account.id}",
                            user_id=account.id, client_ip=ip)
            return _login_form(request, email=email, status=401, next_path=next_path,
                               error="Wrong email or password.")
        await throttle.give_back(credentials.email, ip)
        if not account.email_verified:
            token, token_hash = new_link_token()
            await db.insert_account_link(conn, account.id, "verify", token_hash,
                                         request.app[SETTINGS_KEY].verify_link_ttl)
    if not account.email_verified:
        is_sent = True
        if await throttle.allow_mail("verify", account.email):
            is_sent = await emails.deliver(request, emails.verify_email(request, account.email,
                                                                        token))
        return render(request, "signup_sent.html", {
            "email": account.email, "is_sent": is_sent, "is_login": True}, status=403)
    if account.totp_enabled:
        await start_session(request, account, is_partial=True)
        code = _first(fields, "totp")
        if code:
            # Both factors in one request (scripts): the second step at once.
            return await _second_step(request, account, code, next_path)
        return _totp_form(request, next_path=next_path)
    return await _logged_in(request, account, next_path, method="password")


async def _second_step(request: web.Request, account: AccountRow, code: str,
                       next_path: str) -> web.Response:
    async with request.app[POOL_KEY].acquire() as conn:
        check = await check_second_factor(request, conn, account, code, allow_recovery=True)
    if check.method is None:
        return _totp_form(request, error=check.error, next_path=next_path,
                          status=401 if check.retry_after is None else 429)
    return await _logged_in(request, account, next_path, method=check.method)


async def _logged_in(request: web.Request, account: AccountRow, next_path: str, *,
                     method: str) -> web.Response:
    ip = remote_ip(request)
    await start_session(request, account, is_partial=False)
    await request.app[THROTTLE_KEY].reset(account.email)
    async with request.app[POOL_KEY].acquire() as conn:
        await audit(conn, "login", actor=f"user:{account.id}", user_id=account.id,
                    client_ip=ip, detail={"second_factor": method} if method != "password"
                    else {})
    return redirect(next_path)


async def logout_page(request: web.Request) -> web.Response:
    # A top-level GET from another site (SameSite=Lax sends the cookie) only gets a button;
    # typed, bookmarked or same-site visits log out at once.
    if request.headers.get("Sec-Fetch-Site", "none") in ("none", "same-origin"):
        return await logout_post(request)
    return render(request, "logout.html")


async def logout_post(request: web.Request) -> web.Response:
    account = current_user(request) or partial_user(request)
    await end_session(request)
    if account is not None:
        async with request.app[POOL_KEY].acquire() as conn:
            await audit(conn, "logout", actor=f"user:{account.id}", user_id=account.id,
                        client_ip=remote_ip(request))
    return redirect("/login?done=logged-out")


# --- forgotten password ------------------------------------------------------------------


async def forgot_page(request: web.Request) -> web.Response:
    return render(request, "forgot.html", {"email": "", "error": None})


async def forgot_post(request: web.Request) -> web.Response:
    fields = await _fields(request)
    email = _first(fields, "email").strip()
    if "@" not in email or len(email) > 254:
        return render(request, "forgot.html", {
            "email": email, "error": "Enter the email address of your account."}, status=400)
    settings = request.app[SETTINGS_KEY]
    ip = remote_ip(request)
    wait = await request.app[THROTTLE_KEY].take_request(
        "forgot", ip, settings.forgot_ip_limit, settings.forgot_ip_window)
    if wait is not None:
        return _too_many(request, "forgot.html", {"email": email, "error": (
            "Too many password reset requests from your network. Try again in "
            f"{wait_text(wait)}.")}, wait)
    async with request.app[POOL_KEY].acquire() as conn:
        account = await db.get_account_by_email(conn, email)
    if account is not None:
        # SECURITY: the link is issued and mailed after the answer, so a known address is
        # answered as fast as an unknown one (the SMTP round trip would tell them apart).
        request.app[BACKGROUND_KEY].spawn(_send_reset_link(request, account, ip),
                                          "password-reset-mail")
    return render(request, "forgot_sent.html", {"email": email})


async def _send_reset_link(request: web.Request, account: AccountRow, ip: str) -> None:
    async with request.app[POOL_KEY].acquire() as conn:
        token, token_hash = new_link_token()
        await db.insert_account_link(conn, account.id, "reset", token_hash,
                                     request.app[SETTINGS_KEY].reset_link_ttl)
        await audit(conn, "password.reset_requested", actor=f"user:{account.id}",
                    user_id=account.id, client_ip=ip)
    if await request.app[THROTTLE_KEY].allow_mail("reset", account.email):
        await emails.deliver(request, emails.password_reset(request, account.email, token, ip))


async def _reset_link_state(request: web.Request) -> tuple[LinkState, LinkRow | None]:
    token = request.match_info["token"]
    if not is_link_token(token):
        return LinkState.UNKNOWN, None
    async with request.app[POOL_KEY].acquire() as conn:
        link = await db.find_account_link(conn, "reset", hash_link_token(token))
    if link is None:
        return LinkState.UNKNOWN, None
    return link_state(used_at=link.used_at, superseded_at=link.superseded_at,
                      expires_at=link.expires_at, now=link.now), link


def _reset_problem(request: web.Request, state: LinkState) -> web.Response:
    return render(request, "link_problem.html", {"kind": "reset", "state": state.value},
                  status=404 if state is LinkState.UNKNOWN else 410)


async def reset_page(request: web.Request) -> web.Response:
    # Opening the link changes nothing (a mail scanner may open it); the form's POST does.
    state, _ = await _reset_link_state(request)
    if state is not LinkState.VALID:
        return _reset_problem(request, state)
    return render(request, "reset.html", {"errors": {}})


async def reset_post(request: web.Request) -> web.Response:
    state, link = await _reset_link_state(request)
    if state is not LinkState.VALID or link is None:
        return _reset_problem(request, state)
    password, errors = validate_new_password(await _fields(request))
    if password is None:
        return render(request, "reset.html", {"errors": errors}, status=400)
    ip = remote_ip(request)
    user_id = link.user_id
    async with request.app[POOL_KEY].acquire() as conn, conn.transaction():
        # Single use: of two submissions racing with one link, only one gets here.
        if not await db.mark_account_link_used(conn, link.id):
            return _reset_problem(request, LinkState.USED)
        await db.set_password_hash(conn, user_id, await hash_password_off_loop(password))
        # The link proved the mailbox; every session (a thief's too) is logged out.
        await db.mark_email_verified(conn, user_id)
        await db.delete_user_sessions(conn, user_id)
        await audit(conn, "password.reset", actor=f"user:{user_id}", user_id=user_id,
                    client_ip=ip)
        account = await db.get_account(conn, user_id)
    await end_session(request)
    if account is not None:
        await request.app[THROTTLE_KEY].reset(account.email)
        await emails.deliver(request, emails.password_changed_notice(request, account.email,
                                                                     ip))
    return redirect("/login?done=password-changed")
