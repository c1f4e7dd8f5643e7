"""Needs: PostgreSQL and Redis (tests/conftest.py). The ops CLI's key lifecycle: expiry and
withdrawal addresses on `keys create`, the policy's refusals, `keys list`, `keys roll`, and
`check-config` counting the keys a policy affects."""

from __future__ import annotations

import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from gateway.config.settings import Settings
from gateway.keys.tokens import parse_token
from tests.support.processes import environment_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def gateway_cli(settings: Settings, *args: str, stdin: str = "",
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], input=stdin,
                          capture_output=True, text=True,
                          env=environment_for(settings) | (env or {}), timeout=60)


def with_policy(settings: Settings, folder: Path, policy: str) -> Settings:
    """The test routes with another `policy:` section."""
    text = (ROOT / "tests" / "fixtures" / "routes.yaml").read_text()
    old = "policy:\n  require_ip_allowlist: []\n"
    assert old in text
    path = folder / "routes.yaml"
    path.write_text(text.replace(old, "policy:\n" + policy))
    return settings.replace(routes_path=path)


def new_user(settings: Settings) -> str:
    email = f"ops-{secrets.token_hex(5)}@example.com"
    made = gateway_cli(settings, "users", "create", "--email", email,
                       stdin="a long enough password\n")
    assert made.returncode == 0, made.stderr
    return email


def create(settings: Settings, email: str, *extra: str,
           permissions: str = "read") -> subprocess.CompletedProcess[str]:
    return gateway_cli(settings, "keys", "create", "--email", email, "--name", "bot",
                       "--permissions", permissions, *extra)


async def test_expiry_and_addresses_at_creation_show_in_the_list(settings: Settings,
                                                                 db: asyncpg.Pool) -> None:
    email = new_user(settings)
    made = create(settings, email, "--expires-in", "90d", "--withdraw-address", "bc1qaaa",
                  "--withdraw-address", "0xBbB", permissions="read,withdraw")
    assert made.returncode == 0, made.stderr
    (line,) = made.stdout.splitlines()  # the token, alone on stdout
    token = parse_token(line)
    assert token is not None
    async with db.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT expires_at - confirmed_at AS lifetime FROM api_keys WHERE key_id = $1",
            token.key_id)
        addresses = sorted(r["address"] for r in await conn.fetch(
            "SELECT address FROM key_withdraw_addresses WHERE key_id = $1"
            " AND effective_at <= now()", token.key_id))
    assert row["lifetime"].days == 90
    assert addresses == ["0xBbB", "bc1qaaa"]
    listed = gateway_cli(settings, "keys", "list", "--email", email)
    assert listed.returncode == 0, listed.stderr
    (key_line,) = [x for x in listed.stdout.splitlines() if token.key_id in x]
    assert "EXPIRES" in listed.stdout and "LAST USED" in listed.stdout
    expires = (datetime.now(UTC) + timedelta(days=90)).strftime("%Y-%m-%d")
    assert expires in key_line and " never " not in key_line
    assert "active" in key_line and key_line.count(" - ") >= 2  # not used yet: no time, no IP

    never = create(settings, email)
    assert never.returncode == 0, never.stderr
    listed = gateway_cli(settings, "keys", "list", "--email", email)
    never_id = parse_token(never.stdout.strip())
    assert never_id is not None
    (never_line,) = [x for x in listed.stdout.splitlines() if never_id.key_id in x]
    assert " never " in never_line


@pytest.mark.parametrize(("args", "message"), [
    (("--expires-in", "soon"), "--expires-in: 'soon' is not a duration such as 30m, 12h or 90d"),
    (("--expires-in", "0d"), "--expires-in: '0d' must be more than zero"),
    (("--withdraw-address", "not an address!"), "is not a withdrawal address"),
])
async def test_bad_lifecycle_arguments_are_refused_clearly(settings: Settings,
                                                           args: tuple[str, ...],
                                                           message: str) -> None:
    email = new_user(settings)
    made = create(settings, email, *args)
    assert made.returncode == 1 and made.stdout == ""
    assert message in made.stderr


async def test_the_policy_refuses_keys_at_creation_with_what_to_give(
    settings: Settings, tmp_path: Path
) -> None:
    live = with_policy(settings, tmp_path, "  require_ip_allowlist: [withdraw]\n"
                                           "  max_key_lifetime_days: 30\n")
    email = new_user(live)
    no_ip = create(live, email, "--expires-in", "7d", permissions="read,withdraw")
    assert no_ip.returncode == 1 and no_ip.stdout == ""
    assert ("error: A key with the withdraw permission needs at least one IP address (policy "
            "require_ip_allowlist) (give --ip ADDR)") in no_ip.stderr
    forever = create(live, email)
    assert forever.returncode == 1
    assert "Keys must expire within 30 days" in forever.stderr
    assert "(give --expires-in DURATION)" in forever.stderr
    too_long = create(live, email, "--expires-in", "31d")
    assert too_long.returncode == 1 and "shorter expiry" in too_long.stderr
    fine = create(live, email, "--expires-in", "30d", "--ip", "192.0.2.1",
                  permissions="read,withdraw")
    assert fine.returncode == 0, fine.stderr


async def test_roll_prints_the_new_token_alone_and_records_both_ids(settings: Settings,
                                                                    db: asyncpg.Pool) -> None:
    email = new_user(settings)
    made = create(settings, email, "--ip", "192.0.2.1", "--withdraw-address", "bc1qaaa",
                  permissions="read,withdraw")
    old = parse_token(made.stdout.strip())
    assert old is not None
    rolled = gateway_cli(settings, "keys", "roll", old.key_id, "--overlap", "2h")
    assert rolled.returncode == 0, rolled.stderr
    (line,) = rolled.stdout.splitlines()
    new = parse_token(line)
    assert new is not None and new.key_id != old.key_id
    assert old.secret not in rolled.stdout + rolled.stderr
    assert f"rolled key {old.key_id} to {new.key_id}" in rolled.stderr
    async with db.acquire() as conn:
        rows = {r["key_id"]: r for r in await conn.fetch(
            "SELECT key_id, user_id, name, permissions, allowed_ips, status::text,"
            " expires_at - now() AS left FROM api_keys WHERE key_id = ANY($1::text[])",
            [old.key_id, new.key_id])}
        detail = await conn.fetchval(
            "SELECT detail FROM audit_log WHERE action = 'key.rolled' AND key_id = $1",
            old.key_id)
        addresses = await conn.fetch(
            "SELECT address FROM key_withdraw_addresses WHERE key_id = $1", new.key_id)
    was, now = rows[old.key_id], rows[new.key_id]
    assert (now["user_id"], now["name"], now["permissions"], now["allowed_ips"]) == (
        was["user_id"], was["name"], was["permissions"], was["allowed_ips"])
    assert now["status"] == was["status"] == "active"
    assert 7100 < was["left"].total_seconds() <= 7200
    assert now["left"] is None
    assert [a["address"] for a in addresses] == ["bc1qaaa"]
    assert old.key_id in detail and new.key_id in detail

    gone = gateway_cli(settings, "keys", "roll", "aaaaaaaaaaaaaaaa")
    assert gone.returncode == 1 and "no active key aaaaaaaaaaaaaaaa" in gone.stderr
    bad = gateway_cli(settings, "keys", "roll", old.key_id, "--overlap", "a while")
    assert bad.returncode == 1 and "--overlap: 'a while' is not a duration" in bad.stderr


async def test_check_config_counts_the_keys_a_policy_affects(settings: Settings,
                                                             tmp_path: Path) -> None:
    live = with_policy(settings, tmp_path, "  require_ip_allowlist: [withdraw]\n")
    email = new_user(live)
    before = gateway_cli(live, "check-config")
    assert before.returncode == 0, before.stderr
    count = int(before.stdout.split("policy require_ip_allowlist [withdraw]: ")[1].split()[0])
    # Made before the policy: a withdraw key without an allowlist.
    assert create(settings, email, permissions="withdraw").returncode == 0
    after = gateway_cli(live, "check-config")
    assert after.returncode == 0, after.stderr
    assert (f"policy require_ip_allowlist [withdraw]: {count + 1} existing keys with withdraw "
            "have no IP allowlist and will be refused on withdraw routes") in after.stdout

    offline = gateway_cli(live, "check-config", env={
        "GATEWAY_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"})
    assert offline.returncode == 0, offline.stderr
    assert "policy: could not count the existing keys it affects (database:" in offline.stdout
    plain = gateway_cli(settings, "check-config")
    assert plain.returncode == 0 and "policy" not in plain.stdout
