"""Needs: PostgreSQL and Redis (tests/conftest.py). The admin UI served for real, driven over
HTTP without a browser: accounts, CSRF, 2FA, the key links' every state, limits, escaping.
Mail goes to an in-memory mailer; the browser tests cover the SMTP path."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pyotp
import pytest
from yarl import URL

from admin_ui.app import build_admin_app
from admin_ui.mail import InMemoryMailer, Message
from gateway.config.settings import Settings
from tests.support.servers import RunningApp, start_app

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_LINK = re.compile(r"https?://\S+")


class Browser:
    """A cookie-keeping HTTP client that fills in the CSRF token the way a page would."""

    def __init__(self, base: str, mailer: InMemoryMailer) -> None:
        self.base = base
        self.mailer = mailer
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def close(self) -> None:
        await self.http.close()

    async def get(self, path: str, **kwargs: object) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.base + path, **kwargs) as resp:  # type: ignore[arg-type]
            text = await resp.text()
        if match := _CSRF.search(text):
            self.csrf = match.group(1)
        return resp.status, text, resp

    async def post(self, path: str, data: Mapping[str, str | Sequence[str]] | None = None, *,
                   csrf: bool = True, follow: bool = True
                   ) -> tuple[int, str, aiohttp.ClientResponse]:
        if not self.csrf:
            await self.get("/login")
        fields: list[tuple[str, str]] = []
        for name, value in (data or {}).items():
            values = [value] if isinstance(value, str) else list(value)
            fields.extend((name, v) for v in values)
        if csrf:
            fields.append(("csrf_token", self.csrf))
        async with self.http.post(self.base + path, data=fields,
                                  allow_redirects=follow) as resp:
            text = await resp.text()
        if match := _CSRF.search(text):
            self.csrf = match.group(1)
        return resp.status, text, resp

    def last_mail(self, to: str, subject_part: str = "") -> Message:
        for message in reversed(self.mailer.messages):
            if message.to == to and subject_part in message.subject:
                return message
        raise AssertionError(f"no mail to {to} about {subject_part!r}")

    async def wait_mail(self, to: str, subject_part: str = "") -> Message:
        """`last_mail`, for mail sent after the answer (a reset link): waited for a while."""
        for _ in range(100):
            try:
                return self.last_mail(to, subject_part)
            except AssertionError:
                await asyncio.sleep(0.05)
        return self.last_mail(to, subject_part)

    def link_path(self, message: Message) -> str:
        match = _LINK.search(message.body)
        assert match, message.body
        return urlsplit(match.group(0)).path

    async def signup(self, email: str, password: str = PASSWORD) -> None:
        await self.get("/signup")
        status, text, _ = await self.post("/signup", {"email": email, "password": password})
        assert status == 200 and "Check your inbox" in text
        status, _, resp = await self.get(self.link_path(self.last_mail(email, "Confirm")))
        assert status == 200 and resp.url.path == "/login"

    async def login(self, email: str, password: str = PASSWORD, totp: str | None = None
                    ) -> tuple[int, str, aiohttp.ClientResponse]:
        await self.get("/login")
        result = await self.post("/login", {"email": email, "password": password})
        if totp is not None:
            result = await self.post("/login", {"totp": totp})
        return result

    async def create_key(self, name: str = "bot", permissions: Sequence[str] = ("read",),
                         ips: str = "", totp: str | None = None
                         ) -> tuple[int, str, aiohttp.ClientResponse]:
        await self.get("/keys/new")
        data: dict[str, str | Sequence[str]] = {"name": name, "permissions": permissions,
                                                "ips": ips}
        if totp is not None:
            data["totp"] = totp
        return await self.post("/keys/new", data)


@pytest.fixture
def admin_settings(settings: Settings) -> Settings:
    return settings


@pytest.fixture
async def admin(admin_settings: Settings) -> AsyncIterator[tuple[RunningApp, InMemoryMailer]]:
    mailer = InMemoryMailer()
    running = await start_app(build_admin_app(admin_settings, mailer=mailer))
    yield running, mailer
    await running.stop()


@pytest.fixture
async def browser_factory(admin: tuple[RunningApp, InMemoryMailer]
                          ) -> AsyncIterator[Callable[[], Awaitable[Browser]]]:
    running, mailer = admin
    made: list[Browser] = []

    async def make() -> Browser:
        browser = Browser(running.url, mailer)
        made.append(browser)
        return browser

    yield make
    for browser in made:
        await browser.close()


def new_email() -> str:
    return f"user-{secrets.token_hex(5)}@example.com"


def code_at(secret: str, offset: int) -> str:
    """The TOTP code of the step `offset` steps from now (neighbours are accepted)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * offset)


async def enable_2fa(b: Browser) -> str:
    _, text, _ = await b.get("/settings/2fa")
    match = re.search(r'id="totp-secret"[^>]*>([A-Z2-7]+)<', text)
    assert match, text
    secret = match.group(1)
    status, text, _ = await b.post("/settings/2fa", {"action": "enable",
                                                     "totp": code_at(secret, -1)})
    assert status == 200 and "recovery-codes" in text
    b.recovery_codes = re.findall(r"<code>([a-z2-7]{5}-[a-z2-7]{5})</code>", text)  # type: ignore[attr-defined]
    assert len(b.recovery_codes) == 10  # type: ignore[attr-defined]
    return secret


# --- accounts ----------------------------------------------------------------------------


async def test_signup_verify_login_logout(browser_factory: Callable[[], Awaitable[Browser]]
                                          ) -> None:
    b = await browser_factory()
    email = new_email()
    await b.get("/signup")
    await b.post("/signup", {"email": email, "password": PASSWORD})
    # Not verified yet: the right password gets a new link, not a session.
    status, text, _ = await b.login(email)
    assert status == 403 and "not confirmed" in text
    status, _, resp = await b.get(b.link_path(b.last_mail(email, "Confirm")))
    assert resp.url.path == "/login" and "confirmed" in (await b.get("/login?done=verified"))[1]
    status, text, resp = await b.login(email)
    assert status == 200 and resp.url.path == "/keys" and "API keys" in text
    status, _, resp = await b.post("/logout")
    assert resp.url.path == "/login"
    status, _, resp = await b.get("/keys")
    assert resp.url.path == "/login"


async def test_signup_with_a_taken_email_tells_the_owner_only(
        browser_factory: Callable[[], Awaitable[Browser]]) -> None:
    b = await browser_factory()
    email = new_email()
    await b.signup(email)
    status, text, _ = await b.post("/signup", {"email": email, "password": "another password"})
    assert status == 200 and "Check your inbox" in text
    assert "Sign-up attempt" in b.last_mail(email).subject
    assert (await b.login(email, "another password"))[0] == 401


async def test_session_cookie_attributes_and_rotation(
        browser_factory: Callable[[], Awaitable[Browser]]) -> None:
    b = await browser_factory()
    email = new_email()
    await b.signup(email)
    before = b.http.cookie_jar.filter_cookies(URL(b.base))["keygate_session"].value
    await b.get("/login")
    async with b.http.post(b.base + "/login", data={
            "email": email, "password": PASSWORD, "csrf_token": b.csrf},
            allow_redirects=False) as resp:
        header = resp.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" not in header
    after = b.http.cookie_jar.filter_cookies(URL(b.base))["keygate_session"].value
    assert after != before


async def test_cookie_is_secure_behind_a_trusted_tls_proxy(settings: Settings) -> None:
    import ipaddress

    trusted = settings.replace(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    running = await start_app(build_admin_app(trusted, mailer=InMemoryMailer()))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(running.url + "/login",
                                headers={"X-Forwarded-Proto": "https"}) as resp:
                assert "Secure" in resp.headers["Set-Cookie"]
            async with http.get(running.url + "/login") as resp:
                assert "Secure" not in resp.headers["Set-Cookie"]
    finally:
        await running.stop()


async def test_post_without_csrf_token_is_refused(
        browser_factory: Callable[[], Awaitable[Browser]]) -> None:
    b = await browser_factory()
    email = new_email()
    await b.signup(email)
    for path, data in (("/signup", {"email": new_email(), "password": PASSWORD}),
                       ("/login", {"email": email, "password": PASSWORD})):
        status, _, _ = await b.post(path, data, csrf=False)
        assert status == 403
    await b.login(email)
    status, _, _ = await b.post("/keys/new", {"name": "x", "permissions": "read"}, csrf=False)
    assert status == 403
    b.csrf = "forged" + b.csrf[6:]
    status, _, _ = await b.post("/keys/new", {"name": "x", "permissions": "read"})
    assert status == 403


async def test_login_attempts_are_limited(admin_settings: Settings) -> None:
    limited = admin_settings.replace(login_fail_limit=3)
    mailer = InMemoryMailer()
    running = await start_app(build_admin_app(limited, mailer=mailer))
    b = Browser(running.url, mailer)
    try:
        email = new_email()
        await b.signup(email)
        for _ in range(3):
            assert (await b.login(email, "wrong password!"))[0] == 401
        status, text, _ = await b.login(email)
        assert status == 429 and "Too many failed attempts" in text
    finally:
        await b.close()
        await running.stop()


async def test_password_reset(browser_factory: Callable[[], Awaitable[Browser]]) -> None:
    b, other = await browser_factory(), await browser_factory()
    email = new_email()
    await b.signup(email)
    await b.login(email)
    await other.get("/password/forgot")
    status, text, _ = await other.post("/password/forgot", {"email": email})
    assert status == 200 and "Check your inbox" in text
    reset = other.link_path(await other.wait_mail(email, "Reset"))
    # An unknown address gets the same answer, and no mail.
    count = len(other.mailer.messages)
    status, text, _ = await other.post("/password/forgot", {"email": new_email()})
    assert status == 200 and "Check your inbox" in text
    await asyncio.sleep(0.3)
    assert len(other.mailer.messages) == count
    status, _, _ = await other.get(reset)
    assert status == 200
    status, _, resp = await other.post(reset, {"password": "a brand new password"})
    assert resp.url.path == "/login"
    # Every session was logged out; the old password no longer works, the new one does.
    assert (await b.get("/keys"))[2].url.path == "/login"
    assert (await other.login(email))[0] == 401
    assert (await other.login(email, "a brand new password"))[2].url.path == "/keys"
    status, text, _ = await other.get(reset)
    assert status == 410 and "already used" in text


# --- keys --------------------------------------------------------------------------------


async def _confirm_path(b: Browser, email: str) -> str:
    return b.link_path(b.last_mail(email, "Confirm your new API key"))


async def test_key_link_states(browser_factory: Callable[[], Awaitable[Browser]],
                               db: asyncpg.Pool) -> None:
    b = await browser_factory()
    email = new_email()
    await b.signup(email)
    await b.login(email)
    status, text, resp = await b.create_key("first", ["read", "trade"], "192.0.2.1, 2001:db8::1")
    assert status == 200 and "Check your inbox" in text
    key_id = resp.url.path.split("/")[2]
    first = await _confirm_path(b, email)
    # Resend: the first link is superseded, the second one works once.
    status, text, _ = await b.post(f"/keys/{key_id}/resend")
    assert status == 200 and "new confirmation link" in text
    second = await _confirm_path(b, email)
    assert second != first
    status, text, _ = await b.get(first)
    assert status == 410 and "newer link" in text
    status, text, _ = await b.get(second)
    assert status == 200 and 'id="api-key"' in text
    token = re.search(r'id="api-key"[^>]*>([^<]+)<', text).group(1)  # type: ignore[union-attr]
    assert token.startswith(f"kg_{key_id}_")
    status, text, _ = await b.get(second)
    assert status == 410 and "already used" in text and token not in text
    status, text, _ = await b.get("/keys")
    assert token not in text and "active" in text
    async with db.acquire() as conn:
        row = await conn.fetchrow("SELECT status::text, secret_hash FROM api_keys"
                                  " WHERE key_id = $1", key_id)
    assert row["status"] == "active" and token.encode() not in bytes(row["secret_hash"])
    status, text, _ = await b.get("/keys/confirm/" + "A" * 43)
    assert status == 404 and "not valid" in text


async def test_expired_link(admin_settings: Settings) -> None:
    mailer = InMemoryMailer()
    running = await start_app(build_admin_app(admin_settings.replace(confirm_link_ttl=0.0),
                                              mailer=mailer))
    b = Browser(running.url, mailer)
    try:
        email = new_email()
        await b.signup(email)
        await b.login(email)
        await b.create_key("soon expired")
        status, text, _ = await b.get(await _confirm_path(b, email))
        assert status == 410 and "expired" in text and "Resend" in text
    finally:
        await b.close()
        await running.stop()


async def test_link_opened_logged_out_and_by_another_user(
        browser_factory: Callable[[], Awaitable[Browser]]) -> None:
    owner, scanner, stranger = (await browser_factory(), await browser_factory(),
                                await browser_factory())
    email, other = new_email(), new_email()
    await owner.signup(email)
    await owner.login(email)
    await owner.create_key("mine")
    link = await _confirm_path(owner, email)
    # A mail scanner (no session) is sent to log in; nothing is used up.
    status, text, resp = await scanner.get(link)
    assert resp.url.path == "/login" and resp.url.query["next"] == link
    assert 'id="api-key"' not in text
    # Another account sees a page saying so; nothing is used up either.
    await stranger.signup(other)
    await stranger.login(other)
    status, text, _ = await stranger.get(link)
    assert status == 403 and "another account" in text and 'id="api-key"' not in text
    # The owner, logged out, logs in from that page and comes back to the key.
    await owner.post("/logout")
    status, _, resp = await owner.get(link)
    assert resp.url.path == "/login"
    status, text, resp = await owner.post("/login", {"email": email, "password": PASSWORD,
                                                     "next": resp.url.query["next"]})
    assert resp.url.path == link and 'id="api-key"' in text
    # The stranger's visit used nothing up, and now the link is spent.
    status, text, _ = await stranger.get(link)
    assert status == 403


async def test_key_form_validation(browser_factory: Callable[[], Awaitable[Browser]]) -> None:
    b = await browser_factory()
    email = new_email()
    await b.signup(email)
    await b.login(email)
    six = ", ".join(f"192.0.2.{i}" for i in range(1, 7))
    status, text, _ = await b.create_key("six", ["read"], six)
    assert status == 400 and "at most 5 IP addresses" in text
    status, text, _ = await b.create_key("bad", ["read"], "192.0.2.300")
    assert status == 400 and "not a valid IPv4 or IPv6 address" in text
    status, text, _ = await b.create_key("", ["read"])
    assert status == 400 and "Give the key a name" in text
    status, text, _ = await b.create_key("x" * 65, ["read"])
    assert status == 400 and "at most 64 characters" in text
    status, text, _ = await b.create_key("none", [])
    assert status == 400 and "at least one permission" in text
    status, text, _ = await b.create_key("bogus", ["read", "admin"])
    assert status == 400 and "Unknown permission" in text
    # Five, in both accepted shapes (repeated fields, and separated in one field).
    status, _, _ = await b.create_key("five", ["read"],
                                      [f"192.0.2.{i}" for i in range(1, 4)]  # type: ignore[arg-type]
                                      + ["2001:db8::1\n2001:db8::2"])
    assert status == 200
    _, text, _ = await b.get("/keys/new")
    assert 'value="staking"' in text  # a permission the route config adds


async def test_names_are_escaped(browser_factory: Callable[[], Awaitable[Browser]]) -> None:
    b = await browser_factory()
    email = new_email()
    await b.signup(email)
    await b.login(email)
    status, _, _ = await b.create_key('<script>alert("x")</script>')
    assert status == 200
    _, text, _ = await b.get("/keys")
    assert "<script>alert" not in text and "&lt;script&gt;alert" in text


async def test_key_limit(admin_settings: Settings) -> None:
    mailer = InMemoryMailer()
    running = await start_app(build_admin_app(admin_settings.replace(max_keys_per_user=2),
                                              mailer=mailer))
    b = Browser(running.url, mailer)
    try:
        email = new_email()
        await b.signup(email)
        await b.login(email)
        assert (await b.create_key("one"))[0] == 200
        assert (await b.create_key("two"))[0] == 200
        status, text, _ = await b.create_key("three")
        assert status == 400 and "the most an account may have" in text
    finally:
        await b.close()
        await running.stop()


async def test_delete_key(browser_factory: Callable[[], Awaitable[Browser]],
                          db: asyncpg.Pool) -> None:
    b, stranger = await browser_factory(), await browser_factory()
    email = new_email()
    await b.signup(email)
    await b.login(email)
    _, _, resp = await b.create_key("doomed")
    key_id = resp.url.path.split("/")[2]
    await stranger.signup(other := new_email())
    await stranger.login(other)
    # Not theirs: refused, and nothing changes.
    assert (await stranger.post(f"/keys/{key_id}/delete"))[0] == 404
    _, text, resp = await b.post(f"/keys/{key_id}/delete")
    assert resp.url.path == "/keys" and "was deleted" in text and key_id not in text
    assert "deleted" in b.last_mail(email, "Security notice").subject
    assert (await b.post(f"/keys/{key_id}/delete"))[0] == 404
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT status::text FROM api_keys WHERE key_id = $1",
                                   key_id) == "deleted"


# --- 2FA ---------------------------------------------------------------------------------


async def test_two_factor(browser_factory: Callable[[], Awaitable[Browser]]) -> None:
    b = await browser_factory()
    email = new_email()
    await b.signup(email)
    await b.login(email)
    secret = await enable_2fa(b)
    assert "turned on" in b.last_mail(email, "Security notice").subject
    await b.post("/logout")

    # Password alone is not enough; a wrong code is refused; the right one logs in.
    status, text, _ = await b.login(email)
    assert status == 200 and 'name="totp"' in text
    assert (await b.get("/keys"))[2].url.path == "/login"
    status, text, _ = await b.post("/login", {"totp": "000000"})
    assert status == 401 and "not valid" in text
    current = code_at(secret, 0)
    status, _, resp = await b.post("/login", {"totp": current})
    assert resp.url.path == "/keys"
    await b.post("/logout")

    # The same code again: a replay, refused.
    status, text, _ = await b.login(email, totp=current)
    assert status == 401 and "already used" in text

    # A recovery code works once.
    recovery = b.recovery_codes[0]  # type: ignore[attr-defined]
    status, _, resp = await b.post("/login", {"totp": recovery})
    assert resp.url.path == "/keys"
    await b.post("/logout")
    status, _, _ = await b.login(email, totp=recovery)
    assert status == 401

    # Key creation needs a code too.
    status, _, resp = await b.post("/login", {"totp": b.recovery_codes[1]})  # type: ignore[attr-defined]
    assert resp.url.path == "/keys"
    status, text, _ = await b.create_key("2fa key")
    assert status == 400 and "6-digit code" in text
    status, text, _ = await b.create_key("2fa key", totp=current)
    assert status == 400 and "already used" in text
    status, text, _ = await b.create_key("2fa key", totp=code_at(secret, 1))
    assert status == 200 and "Check your inbox" in text

    # Disable with a recovery code.
    _, text, _ = await b.get("/settings/2fa")
    assert "<strong>8</strong>" in text
    status, text, resp = await b.post("/settings/2fa", {"action": "disable",
                                                        "totp": b.recovery_codes[2]})  # type: ignore[attr-defined]
    assert resp.url.path == "/settings/2fa" and "totp-secret" in text
    assert "turned off" in b.last_mail(email, "Security notice").subject

    _, text, _ = await b.get("/audit")
    for label in ("Key created", "Logged in", "Wrong two-factor code",
                  "Two-factor authentication turned on", "Two-factor authentication turned off"):
        assert label in text


async def test_wrong_codes_are_limited(admin_settings: Settings) -> None:
    mailer = InMemoryMailer()
    running = await start_app(build_admin_app(admin_settings.replace(login_fail_limit=3),
                                              mailer=mailer))
    b = Browser(running.url, mailer)
    try:
        email = new_email()
        await b.signup(email)
        await b.login(email)
        secret = await enable_2fa(b)
        await b.post("/logout")
        await b.login(email)
        for _ in range(3):
            assert (await b.post("/login", {"totp": "000000"}))[0] == 401
        status, text, _ = await b.post("/login", {"totp": code_at(secret, 0)})
        assert status == 429 and "Too many failed attempts" in text
    finally:
        await b.close()
        await running.stop()


async def test_dev_mailbox_routes_exist_only_in_dev_mode(
        browser_factory: Callable[[], Awaitable[Browser]]) -> None:
    b = await browser_factory()
    assert (await b.get("/dev/mailbox.json"))[0] == 404
    assert (await b.get("/dev/mailbox"))[0] == 404


async def test_dev_admin_sends_through_its_sink(settings: Settings) -> None:
    from admin_ui.app import build_dev_admin
    from tests.support.services import free_port

    app, lines, close = await build_dev_admin(settings.replace(smtp_url=None), free_port(),
                                              mail_port=free_port())
    running = await start_app(app)
    b = Browser(running.url, InMemoryMailer())
    try:
        assert any("/dev/mailbox" in line for line in lines)
        email = new_email()
        await b.get("/signup")
        await b.post("/signup", {"email": email, "password": PASSWORD})
        async with b.http.get(running.url + "/dev/mailbox.json") as resp:
            messages = await resp.json()
        [message] = [m for m in messages if m["to"] == email]
        assert set(message) == {"to", "subject", "body", "date"}
        assert "/verify/" in message["body"]
        status, text, _ = await b.get("/dev/mailbox")
        assert status == 200 and "Confirm your email address" in text
    finally:
        await b.close()
        await running.stop()
        await close()


async def test_link_checkers_and_prefetch_do_not_spend_the_link(
        browser_factory: Callable[[], Awaitable[Browser]]) -> None:
    b = await browser_factory()
    email = new_email()
    await b.signup(email)
    await b.login(email)
    await b.create_key("checked")
    link = await _confirm_path(b, email)
    async with b.http.head(b.base + link) as resp:
        assert resp.status == 405
    status, text, _ = await b.get(link, headers={"Sec-Purpose": "prefetch;prerender"})
    assert status == 503 and 'id="api-key"' not in text
    status, text, _ = await b.get(link)
    assert status == 200 and 'id="api-key"' in text


async def test_resend_is_limited(browser_factory: Callable[[], Awaitable[Browser]]) -> None:
    from admin_ui.throttle import MAIL_LIMIT

    b = await browser_factory()
    email = new_email()
    await b.signup(email)
    await b.login(email)
    _, _, resp = await b.create_key("noisy")
    key_id = resp.url.path.split("/")[2]
    for _ in range(MAIL_LIMIT):
        _, text, _ = await b.post(f"/keys/{key_id}/resend")
        assert "We sent a new confirmation link" in text
    sent = len(b.mailer.messages)
    _, text, _ = await b.post(f"/keys/{key_id}/resend")
    assert "Wait a few minutes" in text and len(b.mailer.messages) == sent
