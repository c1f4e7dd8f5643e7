"""Needs: PostgreSQL and Redis (tests/conftest.py). The admin UI's key lifecycle over real
HTTP: expiry and withdrawal addresses at creation, the key policy on the form, rolling
(2FA, emailed link, the old key's end), addresses added later (2FA, link, cooldown), and
the usage page. Mail goes to an in-memory mailer."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from admin_ui.app import build_admin_app
from admin_ui.mail import InMemoryMailer
from gateway.config.settings import Settings
from gateway.store.postgres import PostgresKeyStore
from tests.integration.test_admin_flows import Browser, code_at, enable_2fa, new_email
from tests.support.servers import start_app

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COOLDOWN = 3600.0
_API_KEY = re.compile(r'id="api-key"[^>]*>([^<]+)<')

Factory = Callable[..., Awaitable[Browser]]


@pytest.fixture
async def browsers(settings: Settings) -> AsyncIterator[Factory]:
    """`await browsers()` a logged-out browser on an admin UI of its own (with `**changes`
    to the settings, or `policy="..."` for the route file's policy section)."""
    stops: list[Callable[[], Awaitable[None]]] = []

    async def make(policy: str | None = None, **changes: object) -> Browser:
        live = settings.replace(withdraw_address_cooldown=COOLDOWN, **changes)
        if policy is not None:
            text = (ROOT / "tests" / "fixtures" / "routes.yaml").read_text()
            path = settings.data_dir.parent / f"routes-{len(stops)}.yaml"
            path.write_text(text.replace("policy:\n  require_ip_allowlist: []\n",
                                         "policy:\n" + policy))
            live = live.replace(routes_path=path)
        mailer = InMemoryMailer()
        running = await start_app(build_admin_app(live, mailer=mailer))
        browser = Browser(running.url, mailer)
        stops.extend([browser.close, running.stop])
        return browser

    yield make
    for stop in reversed(stops):
        await stop()


async def _signed_in(b: Browser) -> str:
    email = new_email()
    await b.signup(email)
    await b.login(email)
    return email


async def _new_key(b: Browser, email: str, data: dict[str, str | list[str]],
                   totp: str | None = None) -> tuple[str, str]:
    """Create and confirm a key; (key id, token)."""
    await b.get("/keys/new")
    fields: dict[str, str | list[str]] = {"name": "bot", "permissions": ["read"], "ips": "",
                                          **data}
    if totp is not None:
        fields["totp"] = totp
    status, text, resp = await b.post("/keys/new", fields)
    assert status == 200 and "Check your inbox" in text, text
    key_id = resp.url.path.split("/")[2]
    status, text, _ = await b.get(b.link_path(b.last_mail(email, "Confirm your new API key")))
    assert status == 200
    match = _API_KEY.search(text)
    assert match, text
    return key_id, match.group(1)


async def test_expiry_and_addresses_at_creation(browsers: Factory, db: asyncpg.Pool) -> None:
    b = await browsers()
    email = await _signed_in(b)
    key_id, _ = await _new_key(b, email, {"permissions": ["read", "withdraw"],
                                          "expires_in_days": "7",
                                          "withdraw_addresses": "bc1qaaa\n0xBbB\n"})
    record = await PostgresKeyStore(db).get(key_id)
    assert record is not None and record.expires_at is not None
    assert abs(record.expires_at - (time.time() + 7 * 86400)) < 60
    assert sorted(a for a, _ in record.withdraw_addresses) == ["0xBbB", "bc1qaaa"]
    _, page, _ = await b.get("/keys")
    row = page[page.index(f'data-key-id="{key_id}"'):]
    row = row[:row.index("</tr>")]
    expires = (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%d")
    assert expires in row and "Addresses (2)" in row and "Roll" in row and "Usage" in row
    _, page, _ = await b.get(f"/keys/{key_id}/addresses")
    assert page.count(">yes") == 2  # given at creation: usable at once


async def test_the_form_refuses_what_the_policy_forbids(browsers: Factory,
                                                         db: asyncpg.Pool) -> None:
    b = await browsers(policy="  require_ip_allowlist: [withdraw]\n"
                              "  max_key_lifetime_days: 30\n")
    await _signed_in(b)
    _, page, _ = await b.get("/keys/new")
    assert "Keys must expire within 30 days." in page and "required" in page
    status, text, _ = await b.post("/keys/new", {"name": "w", "permissions": ["withdraw"]})
    assert status == 400
    assert "needs at least one IP address (policy require_ip_allowlist)" in text
    assert 'id="expires_in_days-error"' in text and "choose an expiry" in text
    status, text, _ = await b.post("/keys/new", {"name": "w", "permissions": ["read"],
                                                 "expires_in_days": "31"})
    assert status == 400 and "choose a shorter expiry" in text
    status, text, _ = await b.post("/keys/new", {"name": "w", "permissions": ["read"],
                                                 "expires_in_days": "soon",
                                                 "withdraw_addresses": "bad address!"})
    assert status == 400 and "whole number of days" in text
    assert "is not a withdrawal address" in text
    # The values typed are kept.
    assert ">bad address!</textarea>" in text and 'value="soon"' in text
    status, text, _ = await b.post("/keys/new", {"name": "w", "permissions": ["withdraw"],
                                                 "ips": "192.0.2.1", "expires_in_days": "30"})
    assert status == 200 and "Check your inbox" in text


async def test_roll_with_2fa_confirmed_by_email_starts_the_overlap(
    browsers: Factory, db: asyncpg.Pool
) -> None:
    b = await browsers()
    email = await _signed_in(b)
    secret = await enable_2fa(b)
    old_id, old_token = await _new_key(b, email, {"ips": "192.0.2.1", "expires_in_days": "90",
                                                  "withdraw_addresses": "bc1qaaa",
                                                  "permissions": ["read", "withdraw"]},
                                       totp=code_at(secret, 0))
    _, page, _ = await b.get(f"/keys/{old_id}/roll")
    assert 'name="overlap_hours"' in page and 'value="24"' in page and 'name="totp"' in page
    status, text, _ = await b.post(f"/keys/{old_id}/roll", {"overlap_hours": "2"})
    assert status == 400 and "6-digit code" in text
    status, text, _ = await b.post(f"/keys/{old_id}/roll", {"overlap_hours": "-1",
                                                            "totp": code_at(secret, 1)})
    assert status == 400 and "from 0 to 720" in text
    status, text, resp = await b.post(f"/keys/{old_id}/roll", {"overlap_hours": "2",
                                                               "totp": code_at(secret, 1)})
    assert status == 200 and "Check your inbox" in text
    new_id = resp.url.path.split("/")[2]
    assert new_id != old_id
    # Nothing changes before the link is opened.
    record = await PostgresKeyStore(db).get(old_id)
    assert record is not None and record.expires_at is not None
    assert record.expires_at > time.time() + 80 * 86400
    mail = b.last_mail(email, "Confirm the roll")
    assert old_id in mail.body and new_id in mail.body and "2 hours" in mail.body
    # Only the newest link works, as for a new key.
    first = b.link_path(mail)
    status, _, _ = await b.post(f"/keys/{new_id}/resend")
    second = b.link_path(b.last_mail(email, "Confirm the roll"))
    assert second != first
    assert (await b.get(first))[0] == 410
    status, text, _ = await b.get(second)
    assert status == 200
    match = _API_KEY.search(text)
    assert match and match.group(1).startswith(f"kg_{new_id}_")
    assert old_token not in text and 'id="roll-overlap"' in text and old_id in text
    record = await PostgresKeyStore(db).get(old_id)
    assert record is not None and record.expires_at is not None
    assert abs(record.expires_at - (time.time() + 7200)) < 60
    ends = datetime.fromtimestamp(record.expires_at, UTC).strftime("%Y-%m-%d %H:%M")
    assert ends in text
    new = await PostgresKeyStore(db).get(new_id)
    assert new is not None and new.allowed_ips == record.allowed_ips
    assert [a for a, _ in new.withdraw_addresses] == ["bc1qaaa"]
    _, page, _ = await b.get("/keys")
    old_row = page[page.index(f'data-key-id="{old_id}"'):]
    assert ends in old_row[:old_row.index("</tr>")] and f"rolled to <code>{new_id}" in old_row
    assert f'data-key-id="{new_id}"' in page
    _, audit, _ = await b.get("/audit")
    assert "Key rolled" in audit
    async with db.acquire() as conn:
        detail = await conn.fetchval("SELECT detail FROM audit_log WHERE action = 'key.rolled'"
                                     " AND key_id = $1", old_id)
    assert old_id in detail and new_id in detail


async def test_rolling_needs_room_and_an_active_key_of_ones_own(browsers: Factory) -> None:
    b = await browsers(max_keys_per_user=1)
    email = await _signed_in(b)
    key_id, _ = await _new_key(b, email, {})
    status, text, _ = await b.post(f"/keys/{key_id}/roll", {"overlap_hours": "1"})
    assert status == 400 and "the most an account may have" in text
    other = await browsers()
    await _signed_in(other)
    assert (await other.get(f"/keys/{key_id}/roll"))[0] == 404
    assert (await other.post(f"/keys/{key_id}/roll", {"overlap_hours": "1"}))[0] == 404
    assert (await other.get(f"/keys/{key_id}/usage"))[0] == 404
    assert (await other.get(f"/keys/{key_id}/addresses"))[0] == 404


async def test_addresses_added_later_need_the_2fa_code_when_it_is_on(
    browsers: Factory, db: asyncpg.Pool
) -> None:
    b = await browsers()
    email = await _signed_in(b)
    secret = await enable_2fa(b)
    key_id, _ = await _new_key(b, email, {"permissions": ["read", "withdraw"]},
                               totp=code_at(secret, 0))
    path = f"/keys/{key_id}/addresses"
    _, page, _ = await b.get(path)
    assert "It has no list" in page and 'name="totp"' in page
    status, text, _ = await b.post(path, {"withdraw_addresses": "second"})
    assert status == 400 and "6-digit code" in text
    status, text, _ = await b.post(path, {"withdraw_addresses": "second",
                                          "totp": "000000"})
    assert status == 400
    assert not any("withdrawal addresses" in m.subject for m in b.mailer.messages)
    status, text, resp = await b.post(path, {"withdraw_addresses": "second",
                                             "totp": code_at(secret, 1)})
    assert status == 200 and resp.url.query.get("sent") == "1"
    status, text, _ = await b.get(b.link_path(b.last_mail(email, "withdrawal addresses")))
    assert status == 200 and 'id="usable-from"' in text


async def test_addresses_added_later_wait_for_the_newest_link_and_then_the_cooldown(
    browsers: Factory, db: asyncpg.Pool
) -> None:
    b = await browsers()
    email = await _signed_in(b)
    key_id, _ = await _new_key(b, email, {"permissions": ["read", "withdraw"],
                                          "withdraw_addresses": "first"})
    path = f"/keys/{key_id}/addresses"
    status, text, _ = await b.post(path, {"withdraw_addresses": "first"})
    assert status == 400 and "does not have yet" in text
    status, text, resp = await b.post(path, {"withdraw_addresses": "second\nthird"})
    assert status == 200 and resp.url.query.get("sent") == "1"
    assert "waiting for the emailed confirmation" in text
    first_link = b.link_path(b.last_mail(email, "Confirm new withdrawal addresses"))
    record = await PostgresKeyStore(db).get(key_id)
    assert record is not None and [a for a, _ in record.withdraw_addresses] == ["first"]
    # A newer request: only its link works, and it covers what the older one waited for.
    status, _, _ = await b.post(path, {"withdraw_addresses": "fourth"})
    mail = b.last_mail(email, "Confirm new withdrawal addresses")
    assert "second" in mail.body and "fourth" in mail.body
    assert (await b.get(first_link))[0] == 410
    status, text, _ = await b.get(b.link_path(mail))
    assert status == 200 and 'id="usable-from"' in text
    usable = datetime.now(UTC) + timedelta(seconds=COOLDOWN)
    assert usable.strftime("%Y-%m-%d %H:") in text
    record = await PostgresKeyStore(db).get(key_id)
    assert record is not None
    times = dict(record.withdraw_addresses)
    assert set(times) == {"first", "second", "third", "fourth"}
    assert times["first"] < time.time() < times["fourth"] - COOLDOWN + 60
    _, page, _ = await b.get(path)
    assert page.count("usable from") == 3 and page.count(">yes") == 1
    _, audit, _ = await b.get("/audit")
    assert "Withdrawal addresses confirmed" in audit


async def test_the_usage_page_charts_and_tables_the_hours(browsers: Factory,
                                                         db: asyncpg.Pool) -> None:
    b = await browsers()
    email = await _signed_in(b)
    key_id, _ = await _new_key(b, email, {})
    _, page, _ = await b.get(f"/keys/{key_id}/usage")
    assert "No requests with this key in the last 7 days" in page
    async with db.acquire() as conn:
        await conn.execute(
            "INSERT INTO key_usage_hourly (key_id, hour, code, requests) VALUES"
            " ($1, date_trunc('hour', now()), '', 42),"
            " ($1, date_trunc('hour', now()), 'RATELIMIT', 7),"
            " ($1, date_trunc('hour', now()) - interval '30 hours', 'INVALID_IP_RESTRICTION', 3),"
            " ($1, date_trunc('hour', now()) - interval '9 days', '', 1000)", key_id)
    status, page, _ = await b.get(f"/keys/{key_id}/usage")
    assert status == 200
    assert '<svg viewBox=' in page and 'role="img"' in page and 'id="usage-title"' in page
    assert "42 let through, 7 RATELIMIT, 3 INVALID_IP_RESTRICTION" in page
    assert page.count('data-code="RATELIMIT"') == 1
    table = page[page.index('<table class="usage">'):]
    rows = re.findall(r"<tr><th scope=\"row\">.*?</tr>", table, re.S)
    assert len(rows) == 2  # the busy hours of the week; the older one is left out
    assert re.findall(r"<td[^>]*>(\d+)</td>", rows[0]) == ["42", "7", "0"]
    assert "<script" not in page[page.index("<main"):]  # no JavaScript needed
