"""Needs: PostgreSQL, Redis and chromium (see conftest.py). The key lifecycle in a real browser:
a key created with an expiry and a withdrawal address, rolled with its emailed link (the new
key shown once, the old one working through the overlap), addresses added to it (2FA code,
emailed link, cooldown), and its usage page."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browser.conftest import Stack
from tests.browser.test_admin_browser import (
    call_gateway,
    code_at,
    last_link,
    mails,
    new_email,
    sign_up_and_log_in,
)

pytestmark = pytest.mark.browser

WITHDRAW = "/public/v1/account/withdraw/crypto"


async def withdraw_to(stack: Stack, token: str, address: str) -> int:
    body = json.dumps({"currency": "BTC", "amount": "0.01", "recipient": {"address": address}})
    async with aiohttp.ClientSession() as http:
        async with http.post(stack.gateway_url + WITHDRAW, data=body, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"}) as resp:
            return resp.status


async def confirmed_key(page: Any, stack: Stack, email: str, name: str, *,
                        permissions: list[str], expires_in_days: str = "",
                        addresses: str = "", totp: str | None = None) -> str:
    """Create a key through the form, open its emailed link; the token shown once."""
    await page.goto(f"{stack.admin_url}/keys/new")
    await page.fill("input[name=name]", name)
    for permission in permissions:
        await page.check(f"input[name=permissions][value={permission}]")
    await page.fill("input[name=expires_in_days]", expires_in_days)
    await page.fill("textarea[name=withdraw_addresses]", addresses)
    if totp is not None:
        await page.fill("input[name=totp]", totp)
    await page.get_by_role("button", name="Create key").click()
    await page.get_by_role("heading", name="Check your inbox").wait_for()
    await page.goto(await last_link(page, stack, email, f"\u201c{name}\u201d"))
    return (await page.text_content("#api-key") or "").strip()


async def test_roll_a_key_in_the_browser(browser: Any, stack: Stack, artifacts: Path) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    email = new_email()
    await sign_up_and_log_in(page, stack, email)
    old = await confirmed_key(page, stack, email, "rolling bot", permissions=["read"],
                              expires_in_days="30")
    assert old.startswith("kg_") and await call_gateway(stack, old) == 200

    await page.goto(f"{stack.admin_url}/keys")
    row = page.locator("tr", has_text="rolling bot")
    await row.get_by_role("link", name="Roll key rolling bot").click()
    await page.get_by_role("heading", name=re.compile("Roll the key")).wait_for()
    assert await page.input_value("input[name=overlap_hours]") == "24"
    await page.fill("input[name=overlap_hours]", "-5")
    await page.get_by_role("button", name="Roll key").click()
    await page.get_by_text("Enter how many hours the old key keeps working").wait_for()
    await page.fill("input[name=overlap_hours]", "2")
    await page.screenshot(path=str(artifacts / "admin-roll-key.png"), full_page=True)
    await page.get_by_role("button", name="Roll key").click()
    await page.get_by_role("heading", name="Check your inbox").wait_for()

    await page.goto(await last_link(page, stack, email, "Confirm the roll"))
    new = (await page.text_content("#api-key") or "").strip()
    assert new.startswith("kg_") and new != old
    notice = await page.text_content("#roll-overlap") or ""
    assert "keeps working until" in notice
    await page.screenshot(path=str(artifacts / "admin-roll-shown-once.png"), full_page=True)
    # The overlap: both keys work.
    assert await call_gateway(stack, new) == 200
    assert await call_gateway(stack, old) == 200

    await page.goto(f"{stack.admin_url}/keys")
    rows = page.locator("tr", has_text="rolling bot")
    assert await rows.count() == 2
    texts = [await rows.nth(i).text_content() or "" for i in range(2)]
    assert sum("rolled to" in text for text in texts) == 1
    assert old not in await page.content() and new not in await page.content()
    await page.get_by_role("link", name="Activity").click()
    assert "Key rolled" in (await page.text_content("main") or "")
    await context.close()


async def test_withdrawal_addresses_in_the_browser(
        browser: Any, stack_factory: Callable[..., AbstractAsyncContextManager[Stack]],
        artifacts: Path) -> None:
    async with stack_factory(withdraw_address_cooldown=3600.0) as stack:
        context = await browser.new_context()
        page = await context.new_page()
        email = new_email()
        await sign_up_and_log_in(page, stack, email)
        await page.goto(f"{stack.admin_url}/settings/2fa")
        secret = (await page.text_content("#totp-secret") or "").strip()
        if time.time() % 30 > 25:  # the codes below are counted from this 30 s step
            await asyncio.sleep(30 - time.time() % 30 + 0.2)
        await page.fill("input[name=totp]", code_at(secret, -1))
        await page.get_by_role("button", name="Turn on").click()
        await page.locator("#recovery-codes li").first.wait_for()

        # A bad address is refused with a clear message; what was typed stays.
        await page.goto(f"{stack.admin_url}/keys/new")
        await page.fill("input[name=name]", "payouts")
        await page.check("input[name=permissions][value=withdraw]")
        await page.fill("textarea[name=withdraw_addresses]", "bc1qgood\nnot an address!")
        await page.fill("input[name=totp]", code_at(secret, 0))
        await page.get_by_role("button", name="Create key").click()
        await page.get_by_text("is not a withdrawal address").wait_for()
        assert "not an address!" in await page.input_value("textarea[name=withdraw_addresses]")

        token = await confirmed_key(page, stack, email, "payouts", permissions=["withdraw"],
                                    addresses="bc1qgood", totp=code_at(secret, 0))
        assert await withdraw_to(stack, token, "bc1qgood") == 201
        assert await withdraw_to(stack, token, "bc1qelsewhere") == 403

        await page.goto(f"{stack.admin_url}/keys")
        row = page.locator("tr", has_text="payouts")
        await row.get_by_role("link", name="Withdrawal addresses of key payouts").click()
        await page.get_by_role("heading", name=re.compile("Withdrawal addresses")).wait_for()
        await page.fill("textarea[name=withdraw_addresses]", "bc1qelsewhere")
        await page.fill("input[name=totp]", code_at(secret, 1))
        await page.screenshot(path=str(artifacts / "admin-key-addresses.png"), full_page=True)
        await page.get_by_role("button", name="Add addresses").click()
        await page.get_by_text("We emailed you a link to confirm the new addresses").wait_for()
        assert "waiting for the emailed confirmation" in (await page.text_content("main") or "")

        await page.goto(await last_link(page, stack, email, "withdrawal addresses"))
        usable = await page.text_content("#usable-from") or ""
        assert "usable from" in usable
        # Confirmed, but cooling down: still refused at the gateway.
        assert await withdraw_to(stack, token, "bc1qelsewhere") == 403
        await page.goto(f"{stack.admin_url}/keys/{token.split('_')[1]}/addresses")
        table = await page.text_content("table.addresses") or ""
        assert "bc1qgood" in table and "yes" in table
        assert "bc1qelsewhere" in table and "usable from" in table

        # The usage page: the requests above, as a chart and a table.
        await page.goto(f"{stack.admin_url}/keys/{token.split('_')[1]}/usage")
        svg = page.locator("svg[role=img]")
        for _ in range(50):  # counted in batches
            if await svg.count():
                break
            await page.wait_for_timeout(200)
            await page.reload()
        assert await svg.count() == 1
        assert "Requests per hour" in (await page.text_content("svg[role=img] title") or "")
        assert await page.locator("table.usage tbody tr").count() >= 1
        await page.screenshot(path=str(artifacts / "admin-key-usage.png"), full_page=True)
        await mails(page, stack, email, "withdrawal addresses")
        await context.close()


async def test_the_lifecycle_pages_fit_a_phone(browser: Any, stack: Stack,
                                               artifacts: Path) -> None:
    from tests.browser.test_admin_mobile import PHONE, assert_fits

    context = await browser.new_context(**PHONE)
    page = await context.new_page()
    email = new_email()
    await sign_up_and_log_in(page, stack, email)
    token = await confirmed_key(
        page, stack, email, "phone-bot-with-a-rather-long-unbroken-name-for-a-small-screen",
        permissions=["read", "withdraw"], expires_in_days="30",
        addresses="bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh\n0x71C7656EC7ab88b098defB751B7401B5f6d8976F")
    key_id = token.split("_")[1]
    assert await call_gateway(stack, token) == 200
    await page.goto(f"{stack.admin_url}/keys/new")
    await assert_fits(page, "lifecycle-key-new", artifacts)
    await page.goto(f"{stack.admin_url}/keys")
    await assert_fits(page, "lifecycle-keys", artifacts)
    for name in ("roll", "addresses", "usage"):
        await page.goto(f"{stack.admin_url}/keys/{key_id}/{name}")
        await assert_fits(page, f"lifecycle-{name}", artifacts)
    await context.close()
