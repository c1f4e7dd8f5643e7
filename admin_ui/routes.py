"""Every route of the admin UI, named. Paths and form fields are a contract: scripts and the
browser tests use them."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from admin_ui.views import account, audit, keys, totp

__all__ = ["STATIC_DIR", "setup_routes"]

STATIC_DIR = Path(__file__).parent / "static"


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", account.home, name="home")
    r.add_get("/signup", account.signup_page, name="signup")
    r.add_post("/signup", account.signup_post, name="signup_post")
    r.add_get("/verify/{token}", account.verify_email, name="verify_email")
    r.add_get("/login", account.login_page, name="login")
    r.add_post("/login", account.login_post, name="login_post")
    r.add_get("/logout", account.logout_page, name="logout")
    r.add_post("/logout", account.logout_post, name="logout_post")
    r.add_get("/password/forgot", account.forgot_page, name="password_forgot")
    r.add_post("/password/forgot", account.forgot_post, name="password_forgot_post")
    r.add_get("/password/reset/{token}", account.reset_page, name="password_reset")
    r.add_post("/password/reset/{token}", account.reset_post, name="password_reset_post")

    r.add_get("/settings/2fa", totp.totp_page, name="totp")
    r.add_post("/settings/2fa", totp.totp_post, name="totp_post")

    r.add_get("/keys", keys.keys_page, name="keys")
    r.add_get("/keys/new", keys.new_key_page, name="key_new")
    r.add_post("/keys/new", keys.new_key_post, name="key_new_post")
    # GET only: a HEAD (link checkers) must not spend the one view of a key.
    r.add_get("/keys/confirm/{token}", keys.confirm_key, name="key_confirm", allow_head=False)
    r.add_get("/keys/{key_id}/sent", keys.key_sent, name="key_sent")
    r.add_post("/keys/{key_id}/resend", keys.resend_key, name="key_resend")
    r.add_get("/keys/{key_id}/delete", keys.delete_key_page, name="key_delete")
    r.add_post("/keys/{key_id}/delete", keys.delete_key_post, name="key_delete_post")
    r.add_get("/keys/{key_id}/roll", keys.roll_key_page, name="key_roll")
    r.add_post("/keys/{key_id}/roll", keys.roll_key_post, name="key_roll_post")
    r.add_get("/keys/{key_id}/addresses", keys.addresses_page, name="key_addresses")
    r.add_post("/keys/{key_id}/addresses", keys.addresses_post, name="key_addresses_post")
    r.add_get("/keys/{key_id}/usage", keys.usage_page, name="key_usage")

    r.add_get("/audit", audit.audit_page, name="audit")
    r.add_static("/static", STATIC_DIR, name="static")
