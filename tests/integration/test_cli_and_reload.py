"""Needs: PostgreSQL and Redis (tests/conftest.py). The ops CLI as a user runs it, secrets
never written anywhere, and route reloads (SIGHUP, file change, bad file refused)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from gateway.config.settings import Settings
from gateway.keys.tokens import parse_token
from tests.support.processes import GatewayProcess, environment_for
from tests.support.services import free_port

pytestmark = pytest.mark.integration

BALANCES = "/public/v1/account/balances"


def gateway_cli(settings: Settings, *args: str,
                stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], input=stdin,
                          capture_output=True, text=True, env=environment_for(settings),
                          timeout=60)


async def test_ops_cli_and_no_secret_anywhere(gateway_settings: Settings, db: asyncpg.Pool,
                                              sandbox: object) -> None:
    email = "ops-cli@example.com"
    created = gateway_cli(gateway_settings, "users", "create", "--email", email,
                          stdin="a long enough password\n")
    assert created.returncode == 0, created.stderr
    made = gateway_cli(gateway_settings, "keys", "create", "--email", email, "--name", "bot",
                       "--permissions", "read,trade", "--ip", "127.0.0.1", "--ip", "::1")
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert len(lines) == 1  # the token, alone on stdout
    token = parse_token(lines[0])
    assert token is not None

    listed = gateway_cli(gateway_settings, "keys", "list", "--email", email)
    assert token.key_id in listed.stdout and "read,trade" in listed.stdout
    assert token.secret not in listed.stdout + listed.stderr

    process = GatewayProcess(gateway_settings)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(process.url + BALANCES,
                                headers={"Authorization": f"Bearer {lines[0]}"}) as resp:
                assert resp.status == 200
            deleted = gateway_cli(gateway_settings, "keys", "delete", token.key_id)
            assert deleted.returncode == 0, deleted.stderr
            async with http.get(process.url + BALANCES,
                                headers={"Authorization": f"Bearer {lines[0]}"}) as resp:
                assert resp.status == 401
    finally:
        log = process.stop()

    # SECURITY: the secret is nowhere in the database, nor in any log or CLI output.
    async with db.acquire() as conn:
        tables = [r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        dump = "".join([str(await conn.fetch(f'SELECT * FROM "{t}"'))  # noqa: S608
                        for t in tables])
        actions = [r["action"] for r in await conn.fetch(
            "SELECT action FROM audit_log WHERE key_id = $1 AND action LIKE 'key.%' ORDER BY id",
            token.key_id)]
    for text in (dump, log, created.stderr, made.stderr, listed.stdout, deleted.stdout):
        assert token.secret not in text
    assert actions == ["key.created", "key.confirmed", "key.deleted"]

    again = gateway_cli(gateway_settings, "keys", "delete", token.key_id)
    assert again.returncode == 1 and "already deleted" in again.stderr


def test_cli_refuses_bad_input_clearly(gateway_settings: Settings) -> None:
    bad_ip = gateway_cli(gateway_settings, "keys", "create", "--email", "x@example.com",
                         "--name", "n", "--permissions", "read", "--ip", "1.2.3.999")
    assert bad_ip.returncode == 1 and "'1.2.3.999' is not a valid" in bad_ip.stderr
    six = [a for i in range(6) for a in ("--ip", f"10.0.0.{i}")]
    too_many = gateway_cli(gateway_settings, "keys", "create", "--email", "x@example.com",
                           "--name", "n", "--permissions", "read", *six)
    assert too_many.returncode == 1 and "at most 5" in too_many.stderr
    perm = gateway_cli(gateway_settings, "keys", "create", "--email", "x@example.com",
                       "--name", "n", "--permissions", "read,fly")
    assert perm.returncode == 1 and "fly" in perm.stderr
    for args in (["--help"], ["keys", "--help"], ["keys", "create", "--help"], ["serve", "--help"]):
        assert gateway_cli(gateway_settings, *args).returncode == 0


def test_bad_settings_stop_startup_with_the_names(gateway_settings: Settings) -> None:
    env = environment_for(gateway_settings) | {"GATEWAY_RATE_LIMITS": "maybe",
                                               "GATEWAY_UPSTREAM_URL": "ftp://x"}
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--port",
                             str(free_port()), "--status-port", str(free_port())], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "GATEWAY_RATE_LIMITS has value 'maybe'" in result.stderr
    assert "GATEWAY_UPSTREAM_URL has value 'ftp://x'" in result.stderr


async def test_routes_reload_on_sighup_and_on_change(gateway_settings: Settings,
                                                     db: asyncpg.Pool, tmp_path: Path) -> None:
    from tests.support.servers import issue_key

    routes = tmp_path / "routes.yaml"
    shutil.copy(gateway_settings.routes_path, routes)
    live = gateway_settings.replace(routes_path=routes)
    key = await issue_key(db, live, ["read"])
    process = GatewayProcess(live, workers=2)
    headers = {"Authorization": f"Bearer {key.token}"}

    async def status(path: str) -> int:
        async with aiohttp.ClientSession() as http:
            async with http.get(process.url + path, headers=headers) as resp:
                return resp.status

    async def eventually(path: str, expected: int) -> None:
        for _ in range(100):
            # Several tries per round: each worker must have the new table.
            if all([await status(path) == expected for _ in range(6)]):
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"{path} never answered {expected}")

    try:
        assert await status("/public/v1/account/trades") == 404
        original = routes.read_text()
        routes.write_text(original + "  - {path: /public/v1/account/trades, methods: [GET], "
                                     "permission: read}\n")
        process.signal(signal.SIGHUP)
        await eventually("/public/v1/account/trades", 200)
        # A broken file is refused; the running table stays.
        routes.write_text(original + "  - {path: /public/v1/x, methods: [FETCH], public: true}\n")
        process.signal(signal.SIGHUP)
        await asyncio.sleep(1.5)
        assert await status("/public/v1/account/trades") == 200
        # A valid change is picked up from disk without a signal.
        routes.write_text(original)
        await eventually("/public/v1/account/trades", 404)
    finally:
        log = process.stop()
    assert "unknown method 'FETCH'" in log
