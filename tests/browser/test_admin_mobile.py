"""Needs: PostgreSQL, Redis and chromium (see conftest.py). Every admin page at phone width
(390 CSS pixels): no horizontal scrolling, and no visible element even partly off-screen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Stack
from tests.browser.test_admin_browser import (
    PASSWORD,
    code_at,
    create_key,
    last_link,
    new_email,
)

pytestmark = pytest.mark.browser

WIDTH = 390
PHONE = {"viewport": {"width": WIDTH, "height": 844}, "device_scale_factor": 3,
         "is_mobile": True, "has_touch": True}

# Every rendered element with a box: its box must lie within [0, WIDTH]. Elements that are not
# displayed, hidden, or have no size take no room on the screen.
_OFF_SCREEN = """(width) => {
  const out = [];
  for (const el of document.querySelectorAll("body, body *")) {
    const style = getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden") continue;
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    if (box.left < -0.5 || box.right > width + 0.5) {
      const name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
        + (el.className && typeof el.className === "string" ? "." + el.className : "");
      out.push(`${name} [${Math.round(box.left)}, ${Math.round(box.right)}]`);
    }
  }
  return {scrollWidth: document.documentElement.scrollWidth, offScreen: out};
}"""


async def assert_fits(page: Any, name: str, artifacts: Path) -> None:
    await page.screenshot(path=str(artifacts / f"phone-{name}.png"), full_page=True)
    found = await page.evaluate(_OFF_SCREEN, WIDTH)
    assert found["scrollWidth"] <= WIDTH, (name, found)
    assert found["offScreen"] == [], (name, found)


async def test_every_page_fits_a_phone(browser: Any, stack: Stack, artifacts: Path) -> None:
    context = await browser.new_context(**PHONE)
    page = await context.new_page()
    base = stack.admin_url
    # The longest things users give: an unbroken 64-character name, a long address.
    email = f"a-rather-long-mailbox-name-{new_email()}"
    long_name = "trading-bot-for-the-main-account-with-an-unbroken-name-of-64-chr"
    assert len(long_name) == 64

    await page.goto(f"{base}/signup")
    await assert_fits(page, "signup", artifacts)
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await page.get_by_role("heading", name="Check your inbox").wait_for()
    await assert_fits(page, "signup-sent", artifacts)
    await page.goto(await last_link(page, stack, email, "Confirm your email"))

    await assert_fits(page, "login", artifacts)
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(f"{base}/keys")
    await assert_fits(page, "keys-empty", artifacts)

    await page.goto(f"{base}/password/forgot")
    await assert_fits(page, "forgot", artifacts)
    await page.goto(f"{base}/no/such/page")
    await assert_fits(page, "not-found", artifacts)

    # Keys: one shown once, one pending, with long values everywhere.
    await create_key(page, stack, long_name, ["read", "trade"],
                     "2001:db8:1234:5678:9abc:def0:1234:5678\n192.0.2.100\n2001:db8::7")
    await page.get_by_role("heading", name="Check your inbox").wait_for()
    await assert_fits(page, "key-sent", artifacts)
    await page.goto(await last_link(page, stack, email, "Confirm your new API key"))
    await page.locator("#api-key").wait_for()
    await assert_fits(page, "key-shown-once", artifacts)
    await create_key(page, stack, "pending", ["read"], "")
    await page.get_by_role("heading", name="Check your inbox").wait_for()

    await page.goto(f"{base}/keys/new")
    await assert_fits(page, "key-new", artifacts)
    await page.fill("input[name=name]", "")
    await page.get_by_role("button", name="Create key").click()
    await page.get_by_text("Give the key a name").wait_for()
    await assert_fits(page, "key-new-errors", artifacts)

    await page.goto(f"{base}/keys")
    await assert_fits(page, "keys", artifacts)
    row = page.locator("tr", has_text=long_name)
    await row.get_by_role("button", name="Delete").click()
    dialog = page.locator("dialog#delete-dialog")
    await dialog.wait_for(state="visible")
    await assert_fits(page, "delete-dialog", artifacts)
    await dialog.get_by_role("button", name="Cancel").click()
    await page.goto(f"{base}/keys/{await row.get_attribute('data-key-id')}/delete")
    await assert_fits(page, "delete-page", artifacts)

    await page.goto(f"{base}/settings/2fa")
    await assert_fits(page, "2fa-enable", artifacts)
    secret = (await page.text_content("#totp-secret") or "").strip()
    await page.fill("input[name=totp]", code_at(secret, -1))
    await page.get_by_role("button", name="Turn on").click()
    await page.locator("#recovery-codes").wait_for()
    await assert_fits(page, "2fa-recovery-codes", artifacts)
    await page.goto(f"{base}/settings/2fa")
    await assert_fits(page, "2fa-status", artifacts)

    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url("**/login**")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.locator("input[name=totp]").wait_for()
    await assert_fits(page, "login-2fa", artifacts)
    await page.fill("input[name=totp]", code_at(secret, 0))
    await page.get_by_role("button", name="Continue").click()
    await page.wait_for_url(f"{base}/keys")

    await page.goto(f"{base}/audit")
    await assert_fits(page, "activity", artifacts)
    await page.goto(f"{base}/dev/mailbox")
    await assert_fits(page, "mailbox", artifacts)
    await context.close()
