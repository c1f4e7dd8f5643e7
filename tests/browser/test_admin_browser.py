"""Needs: PostgreSQL, Redis and chromium (see conftest.py). The path a user takes, in a real
browser: sign up, verify, 2FA, create a key, the emailed link, the gateway, delete."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest

from tests.browser.conftest import Stack

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
BALANCES = "/public/v1/account/balances"


def new_email() -> str:
    return f"user-{secrets.token_hex(5)}@example.com"


def code_at(secret: str, offset: int) -> str:
    """The code of the step `offset` steps from now: neighbouring steps are accepted."""
    return pyotp.TOTP(secret).at(time.time() + 30 * offset)


async def mails(page: Any, stack: Stack, to: str, subject_part: str) -> list[dict[str, str]]:
    """Messages the SMTP sink received, read the way a person would: at /dev/mailbox.json."""
    for _ in range(50):
        response = await page.request.get(f"{stack.admin_url}/dev/mailbox.json")
        assert response.status == 200
        found = [m for m in await response.json()
                 if m["to"] == to and subject_part in m["subject"]]
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no mail to {to} about {subject_part!r}")


async def last_link(page: Any, stack: Stack, to: str, subject_part: str) -> str:
    body = (await mails(page, stack, to, subject_part))[0]["body"]  # newest first
    match = re.search(r"https?://\S+", body)
    assert match, body
    assert match.group(0).startswith(stack.admin_url), "links come from GATEWAY_ADMIN_URL"
    return match.group(0)


async def call_gateway(stack: Stack, token: str) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.get(stack.gateway_url + BALANCES,
                            headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status


async def sign_up_and_log_in(page: Any, stack: Stack, email: str) -> None:
    await page.goto(f"{stack.admin_url}/signup")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await page.get_by_role("heading", name="Check your inbox").wait_for()
    await page.goto(await last_link(page, stack, email, "Confirm your email"))
    assert page.url.startswith(f"{stack.admin_url}/login")
    await page.get_by_text("Your email address is confirmed").wait_for()
    await log_in(page, stack, email)


async def log_in(page: Any, stack: Stack, email: str, totp: str | None = None) -> None:
    if not page.url.startswith(f"{stack.admin_url}/login"):
        await page.goto(f"{stack.admin_url}/login")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    if totp is not None:
        await page.fill("input[name=totp]", totp)
        await page.get_by_role("button", name="Continue").click()


async def log_out(page: Any) -> None:
    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url("**/login**")


async def create_key(page: Any, stack: Stack, name: str, permissions: list[str], ips: str,
                     totp: str | None = None, screenshot: Path | None = None) -> None:
    await page.goto(f"{stack.admin_url}/keys/new")
    await page.fill("input[name=name]", name)
    for permission in permissions:
        await page.check(f"input[name=permissions][value={permission}]")
    await page.fill("[name=ips]", ips)
    if totp is not None:
        await page.fill("input[name=totp]", totp)
    if screenshot is not None:
        await page.screenshot(path=str(screenshot), full_page=True)
    await page.get_by_role("button", name="Create key").click()


async def test_the_whole_user_path(browser: Any, stack: Stack, artifacts: Path) -> None:
    context = await browser.new_context()
    await context.grant_permissions(["clipboard-read", "clipboard-write"],
                                    origin=stack.admin_url)
    page = await context.new_page()
    email = new_email()
    await sign_up_and_log_in(page, stack, email)
    assert page.url == f"{stack.admin_url}/keys"

    # Enable 2FA: the secret as text beside the QR code; ten recovery codes shown once.
    await page.get_by_role("link", name="Two-factor").click()
    assert await page.locator(".qr svg").count() == 1
    secret = (await page.text_content("#totp-secret") or "").strip()
    await page.screenshot(path=str(artifacts / "admin-2fa-enable.png"), full_page=True)
    await page.fill("input[name=totp]", code_at(secret, -1))
    await page.get_by_role("button", name="Turn on").click()
    assert await page.locator("#recovery-codes li").count() == 10
    await mails(page, stack, email, "two-factor authentication turned on")

    # Log in again: the password, then the code.
    await log_out(page)
    await log_in(page, stack, email, totp=code_at(secret, 0))
    await page.wait_for_url(f"{stack.admin_url}/keys")

    # Create a key: read + trade, two IPs, the 2FA code.
    await create_key(page, stack, "trading bot", ["read", "trade"], "127.0.0.1\n2001:db8::7",
                     totp=code_at(secret, 1), screenshot=artifacts / "admin-create-key.png")
    await page.get_by_role("heading", name="Check your inbox").wait_for()

    # The email, through SMTP into the sink; its link, opened by the logged-in owner.
    link = await last_link(page, stack, email, "Confirm your new API key")
    await page.goto(link)
    token = (await page.text_content("#api-key") or "").strip()
    assert token.startswith("kg_")
    await page.get_by_text("It will never be shown again").wait_for()
    await page.get_by_role("button", name="Copy").click()
    await page.get_by_text("Copied.").wait_for()
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied == token
    await page.screenshot(path=str(artifacts / "admin-key-shown-once.png"), full_page=True)

    # The running gateway accepts it.
    assert await call_gateway(stack, copied) == 200

    # Reloading shows no token.
    await page.reload()
    assert await page.locator("#api-key").count() == 0
    assert token not in await page.content()
    await page.get_by_text("already used").wait_for()

    # The key list: no secret anywhere.
    await page.goto(f"{stack.admin_url}/keys")
    row = page.locator("tr", has_text="trading bot")
    assert "active" in (await row.text_content() or "")
    assert "2001:db8::7" in (await row.text_content() or "")
    assert token not in await page.content()
    await page.screenshot(path=str(artifacts / "admin-key-list.png"), full_page=True)

    # Delete in the in-page dialog; the gateway refuses the key at once.
    await row.get_by_role("button", name=re.compile("Delete")).click()
    dialog = page.locator("dialog#delete-dialog")
    await dialog.wait_for(state="visible")
    assert "trading bot" in (await dialog.text_content() or "")
    await page.screenshot(path=str(artifacts / "admin-delete-dialog.png"))
    await dialog.get_by_role("button", name="Yes, delete it").click()
    await page.get_by_text("The key was deleted").wait_for()
    assert await page.locator("tr", has_text="trading bot").count() == 0
    status = await call_gateway(stack, token)
    deadline = time.monotonic() + 1.0
    while status != 401 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        status = await call_gateway(stack, token)
    assert status == 401
    await mails(page, stack, email, "was deleted")

    # The user's own activity.
    await page.get_by_role("link", name="Activity").click()
    text = await page.text_content("main") or ""
    for label in ("Key created", "Key confirmed", "Key deleted", "Logged in",
                  "Two-factor authentication turned on"):
        assert label in text
    await page.screenshot(path=str(artifacts / "admin-activity.png"), full_page=True)
    await context.close()


async def test_links_resend_sixth_ip_csrf_and_logged_out(browser: Any, stack: Stack) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    email = new_email()
    await sign_up_and_log_in(page, stack, email)

    # A sixth IP is refused with a clear message, and what was typed stays in the form.
    six = ", ".join(f"192.0.2.{i}" for i in range(1, 7))
    await create_key(page, stack, "six", ["read"], six)
    await page.get_by_text("A key allows at most 5 IP addresses; you entered 6").wait_for()
    assert await page.input_value("[name=ips]") == six

    # A key named <script> is harmless.
    await create_key(page, stack, "<script>window.pwned=1</script>", ["read"], "")
    await page.get_by_role("heading", name="Check your inbox").wait_for()
    await page.goto(f"{stack.admin_url}/keys")
    assert await page.evaluate("window.pwned") is None
    await page.get_by_text("<script>window.pwned=1</script>").wait_for()

    # Resend: the first link is superseded; the newest works once; reuse gets a clear page.
    await create_key(page, stack, "resent", ["read"], "")
    await page.get_by_role("heading", name="Check your inbox").wait_for()
    first = await last_link(page, stack, email, "\u201cresent\u201d")
    await page.get_by_role("button", name="Resend the email").click()
    await page.get_by_text("We sent a new confirmation link").wait_for()
    second = (await mails(page, stack, email, "\u201cresent\u201d"))[0]["body"]
    second_link = re.search(r"https?://\S+", second).group(0)  # type: ignore[union-attr]
    assert second_link != first
    await page.goto(first)
    await page.get_by_role("heading", name="A newer link replaced this one").wait_for()
    assert await page.locator("#api-key").count() == 0
    await page.goto(second_link)
    assert (await page.text_content("#api-key") or "").startswith("kg_")
    await page.goto(second_link)
    await page.get_by_role("heading", name="This link was already used").wait_for()

    # A POST without the CSRF token is refused (the browser's own cookies are sent).
    response = await page.request.post(f"{stack.admin_url}/keys/new",
                                       form={"name": "forged", "permissions": "read"})
    assert response.status == 403
    await page.goto(f"{stack.admin_url}/keys")
    assert await page.locator("tr", has_text="forged").count() == 0

    # A link opened while logged out: log in first, then back to the link, which works.
    await create_key(page, stack, "later", ["read"], "")
    await page.get_by_role("heading", name="Check your inbox").wait_for()
    link = await last_link(page, stack, email, "\u201clater\u201d")
    await log_out(page)
    await page.goto(link)
    await page.wait_for_url("**/login?next=**")
    assert await page.locator("#api-key").count() == 0
    await log_in(page, stack, email)
    await page.wait_for_url(link)
    assert (await page.text_content("#api-key") or "").startswith("kg_")
    await context.close()


async def test_expired_link_and_two_factor_codes(
        browser: Any, stack_factory: Callable[..., AbstractAsyncContextManager[Stack]]) -> None:
    async with stack_factory(confirm_link_ttl=0.0) as stack:
        context = await browser.new_context()
        page = await context.new_page()
        email = new_email()
        await sign_up_and_log_in(page, stack, email)
        await page.goto(f"{stack.admin_url}/settings/2fa")
        secret = (await page.text_content("#totp-secret") or "").strip()
        await page.fill("input[name=totp]", code_at(secret, -1))
        await page.get_by_role("button", name="Turn on").click()
        recovery = [(await li.text_content() or "").strip()
                    for li in await page.locator("#recovery-codes li").all()]
        assert len(recovery) == 10

        # An expired link gets a page saying what to do.
        used = code_at(secret, 0)  # kept: a 30 s step may end before it is replayed below
        await create_key(page, stack, "expires", ["read"], "", totp=used)
        await page.get_by_role("heading", name="Check your inbox").wait_for()
        await page.goto(await last_link(page, stack, email, "\u201cexpires\u201d"))
        await page.get_by_role("heading", name="This link has expired").wait_for()
        assert await page.locator("#api-key").count() == 0

        # A wrong code, then a replayed code, are refused at login.
        await log_out(page)
        await log_in(page, stack, email, totp="000000")
        await page.get_by_text("That code is not valid").wait_for()
        await page.fill("input[name=totp]", used)  # used for the key above
        await page.get_by_role("button", name="Continue").click()
        await page.get_by_text("already used").wait_for()
        assert "/login" in page.url

        # A recovery code logs in, once.
        await page.fill("input[name=totp]", recovery[0])
        await page.get_by_role("button", name="Continue").click()
        await page.wait_for_url(f"{stack.admin_url}/keys")
        await log_out(page)
        await log_in(page, stack, email, totp=recovery[0])
        await page.get_by_text("That code is not valid").wait_for()

        await page.goto(f"{stack.admin_url}/logout")
        await page.goto(f"{stack.admin_url}/audit")
        assert "/login" in page.url
        body = json.dumps(await (await page.request.get(
            f"{stack.admin_url}/dev/mailbox.json")).json())
        assert "recovery code was used" in body
        await context.close()
