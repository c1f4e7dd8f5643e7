"""Needs: PostgreSQL and Redis (tests/conftest.py). The key lifecycle at the gateway, over real
HTTP in front of the sandbox exchange: expiry (also across a cache warm before it), a roll's
overlap on two gateway processes, introspection (answered by the gateway, never forwarded),
last use, the policy applied to existing keys, and the withdrawal-address allowlist with its
cooldown."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from gateway.config.settings import Settings
from gateway.keys.accounts import create_user
from gateway.keys.lifecycle import (
    activate,
    activate_key,
    confirm_addresses,
    create_key,
    request_addresses,
    roll_key,
)
from gateway.store.redis import RedisKeyCache, connect_redis
from tests.support.processes import GatewayProcess
from tests.support.servers import (
    IssuedKey,
    RunningApp,
    RunningGateway,
    bearer,
    raw_request,
    start_gateway,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BALANCES = "/public/v1/account/balances"
DEPOSIT = "/public/v1/account/deposit/crypto/BTC"
WITHDRAW = "/public/v1/account/withdraw/crypto"
INTROSPECTION = "/gateway/v1/key"


async def make_key(db: asyncpg.Pool, settings: Settings, *, permissions: tuple[str, ...] = (
        "read",), ips: tuple[str, ...] = (), lifetime: float | None = None,
        addresses: tuple[str, ...] = (), user_id: int | None = None) -> IssuedKey:
    async with db.acquire() as conn:
        if user_id is None:
            user_id = await create_user(conn, f"u{secrets.token_hex(6)}@example.com",
                                        "correct horse battery", verified=True)
        key_id = await create_key(conn, user_id=user_id, name="bot", permissions=permissions,
                                  allowed_ips=ips, actor="test", lifetime=lifetime,
                                  withdraw_addresses=addresses)
        token = await activate_key(conn, key_id, pepper=settings.key_pepper or "",
                                   hash_version=settings.key_pepper_version, actor="test")
    return IssuedKey(token, key_id, user_id)


async def call(http: aiohttp.ClientSession, url: str, key: IssuedKey | str,
               method: str = "GET", path: str = BALANCES, **kwargs: object
               ) -> tuple[int, dict[str, object]]:
    headers = {**bearer(key), **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    async with http.request(method, url + path, headers=headers,
                            **kwargs) as resp:  # type: ignore[arg-type]
        text = await resp.text()
        body = json.loads(text) if text.startswith(("{", "[")) else {}
        return resp.status, body if isinstance(body, dict) else {"list": body}


async def last_request(http: aiohttp.ClientSession, sandbox: RunningApp) -> dict[str, object]:
    async with http.get(sandbox.url + "/__sandbox/last-request") as resp:
        seen: dict[str, object] = await resp.json()
        return seen


def process_for(live: Settings, folder: Path) -> GatewayProcess:
    """A second `gateway serve` process with these settings."""
    config = folder / f"gateway-{secrets.token_hex(3)}.yaml"
    config.write_text(f"auth_fail_limit: 100000\nlast_used_flush_interval: 0.2\n"
                      f"withdraw_address_cooldown: {live.withdraw_address_cooldown}\n")
    return GatewayProcess(live, extra_env={"GATEWAY_CONFIG": str(config)})


def routes_with(folder: Path, policy: str) -> Path:
    text = (ROOT / "tests" / "fixtures" / "routes.yaml").read_text()
    old = "policy:\n  require_ip_allowlist: []\n"
    assert old in text
    path = folder / f"routes-{secrets.token_hex(3)}.yaml"
    path.write_text(text.replace(old, "policy:\n" + policy))
    return path


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# --- expiry ------------------------------------------------------------------------------


async def test_a_key_past_its_expiry_is_refused_from_a_cache_warm_before_it(
    gateway: RunningGateway, gateway_settings: Settings, db: asyncpg.Pool,
    http: aiohttp.ClientSession, tmp_path: Path,
) -> None:
    key = await make_key(db, gateway_settings, lifetime=2.0)
    other = process_for(gateway_settings, tmp_path)
    try:
        for url in (gateway.url, other.url):
            assert (await call(http, url, key))[0] == 200
        store = gateway.services.store
        answered = store.stats.postgres_hits + store.stats.redis_hits
        record = store.memory.get(key.key_id)
        assert record is not None and getattr(record, "expires_at", None) is not None
        await asyncio.sleep(max(0.0, record.expires_at - time.time()) + 0.05)  # type: ignore[union-attr]
        for url in (gateway.url, other.url):
            status, body = await call(http, url, key)
            assert status == 401 and body["error"] == "APIKEY_EXPIRED", body
            assert "expired at" in str(body["message"])
        # SECURITY: decided from the cached record and the clock: no store was asked.
        assert store.stats.postgres_hits + store.stats.redis_hits == answered
        status, _ = await call(http, gateway.url, key, path=INTROSPECTION)
        assert status == 401
    finally:
        other.stop()


async def test_an_expired_key_is_not_an_authentication_failure(
    settings: Settings, sandbox: RunningApp, db: asyncpg.Pool, http: aiohttp.ClientSession,
) -> None:
    live = settings.replace(upstream_url=sandbox.url, auth_fail_limit=2)
    running = await start_gateway(live)
    try:
        expired = await make_key(db, live, lifetime=0.5)
        valid = await make_key(db, live)
        await asyncio.sleep(0.6)
        for _ in range(4):  # past the failure limit, were these failures
            status, body = await call(http, running.url, expired)
            assert status == 401 and body["error"] == "APIKEY_EXPIRED"
        await asyncio.sleep(0.2)
        assert (await call(http, running.url, valid))[0] == 200  # the IP is not blocked
        for _ in range(3):  # whereas wrong keys do get it blocked
            await call(http, running.url, "kg_" + "a" * 16 + "_wrong")
        await asyncio.sleep(0.2)
        status, body = await call(http, running.url, valid)
        assert status == 403 and body["error"] == "CLIENT_IP_BLOCKED"
    finally:
        await running.stop()


# --- rolling -----------------------------------------------------------------------------


async def test_a_roll_overlap_on_two_gateways(
    gateway: RunningGateway, gateway_settings: Settings, sandbox: RunningApp, db: asyncpg.Pool,
    redis_url: str, http: aiohttp.ClientSession, tmp_path: Path,
) -> None:
    old = await make_key(db, gateway_settings, permissions=("read", "withdraw"),
                         ips=("127.0.0.1",))
    other = process_for(gateway_settings, tmp_path)
    urls = [gateway.url, other.url]
    cache = RedisKeyCache.from_settings(connect_redis(redis_url, 1.0), gateway_settings)
    try:
        for url in urls:  # warm everywhere, with no expiry in the cached record
            assert (await call(http, url, old))[0] == 200
        async with db.acquire() as conn:
            new_id = await roll_key(conn, old.key_id, overlap=2.0, actor="test")
            done = await activate(conn, new_id, pepper=gateway_settings.key_pepper or "",
                                  hash_version=1, actor="test", cache=cache)
        assert done.old_expires_at is not None
        ends = done.old_expires_at.timestamp()
        new = IssuedKey(done.token, new_id, old.user_id)
        for url in urls:  # the overlap: both work, on every gateway
            assert (await call(http, url, new))[0] == 200
            assert (await call(http, url, old))[0] == 200
        async with http.get(other.url + BALANCES, headers=bearer(new)) as resp:
            assert resp.status == 200
        seen = await last_request(http, sandbox)
        headers = seen["headers"]
        assert isinstance(headers, dict)
        assert headers["x-gateway-account-id"] == str(old.user_id)  # the same account
        assert headers["x-gateway-permissions"] == "read,withdraw"
        await asyncio.sleep(max(0.0, ends - time.time()) + 0.1)
        for url in urls:
            status, body = await call(http, url, old)
            assert status == 401 and body["error"] == "APIKEY_EXPIRED", (url, body)
            assert (await call(http, url, new))[0] == 200
    finally:
        await cache.aclose()
        other.stop()


async def test_a_roll_with_no_overlap_ends_the_old_key_at_once_everywhere(
    gateway: RunningGateway, gateway_settings: Settings, db: asyncpg.Pool, redis_url: str,
    http: aiohttp.ClientSession, tmp_path: Path,
) -> None:
    old = await make_key(db, gateway_settings)
    other = process_for(gateway_settings, tmp_path)
    cache = RedisKeyCache.from_settings(connect_redis(redis_url, 1.0), gateway_settings)
    try:
        for url in (gateway.url, other.url):
            assert (await call(http, url, old))[0] == 200
        async with db.acquire() as conn:
            new_id = await roll_key(conn, old.key_id, overlap=0.0, actor="test")
            await activate(conn, new_id, pepper=gateway_settings.key_pepper or "",
                           hash_version=1, actor="test", cache=cache)
        started = time.monotonic()
        pending = {gateway.url, other.url}
        while pending:  # the invalidation brings the new expiry to every cache
            pending = {url for url in pending if (await call(http, url, old))[0] != 401}
            assert time.monotonic() - started < 2.0, pending
            await asyncio.sleep(0.01)
    finally:
        await cache.aclose()
        other.stop()


# --- introspection -----------------------------------------------------------------------


async def test_introspection_is_answered_by_the_gateway_and_never_forwarded(
    gateway: RunningGateway, gateway_settings: Settings, sandbox: RunningApp, db: asyncpg.Pool,
    http: aiohttp.ClientSession,
) -> None:
    key = await make_key(db, gateway_settings, permissions=("trade",), ips=("127.0.0.1",),
                         lifetime=86400.0, addresses=("bc1qgood",))
    reader = await make_key(db, gateway_settings)
    assert (await call(http, gateway.url, reader))[0] == 200  # the sandbox's last request
    before = await last_request(http, sandbox)
    async with http.get(gateway.url + INTROSPECTION, headers={
            **bearer(key), "X-Request-Id": "intro-1"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers["X-Request-Id"] == "intro-1"
        assert resp.headers["Cache-Control"] == "no-store"
        assert "X-RateLimit-Remaining" in resp.headers
        body = await resp.json()
    assert await last_request(http, sandbox) == before  # nothing arrived upstream
    assert set(body) >= {"key_id", "name", "permissions", "ip_allowlist", "created_at",
                         "expires_at", "last_used_at", "last_used_ip"}
    assert body["key_id"] == key.key_id and body["name"] == "bot"
    assert body["permissions"] == ["trade"] and body["ip_allowlist"] == ["127.0.0.1"]
    assert body["expires_at"].endswith("Z") and body["created_at"].endswith("Z")
    assert [a["address"] for a in body["withdraw_addresses"]] == ["bc1qgood"]
    assert key.token not in json.dumps(body)
    # Its last use (the introspection itself) arrives with the next batch.
    for _ in range(100):
        status, body = await call(http, gateway.url, key, path=INTROSPECTION)
        if body.get("last_used_at"):
            break
        await asyncio.sleep(0.1)
    assert status == 200 and body["last_used_ip"] == "127.0.0.1"


async def test_introspection_applies_the_key_checks(
    gateway: RunningGateway, gateway_settings: Settings, db: asyncpg.Pool,
    http: aiohttp.ClientSession,
) -> None:
    elsewhere = await make_key(db, gateway_settings, ips=("192.0.2.1",))
    status, body = await call(http, gateway.url, elsewhere, path=INTROSPECTION)
    assert status == 403 and body["error"] == "INVALID_IP_RESTRICTION"
    async with http.get(gateway.url + INTROSPECTION) as resp:
        assert resp.status == 401 and (await resp.json())["error"] == "MISSING_CREDENTIALS"
    status, body = await call(http, gateway.url, "kg_not_a_token", path=INTROSPECTION)
    assert status == 401 and body["error"] == "INVALID_APIKEY"
    key = await make_key(db, gateway_settings)
    status, _ = await call(http, gateway.url, key, method="POST", path=INTROSPECTION)
    assert status == 404


# --- last used ---------------------------------------------------------------------------


async def test_last_use_and_usage_counts_come_from_the_outcome_batches(
    gateway: RunningGateway, gateway_settings: Settings, db: asyncpg.Pool,
    http: aiohttp.ClientSession,
) -> None:
    key = await make_key(db, gateway_settings)
    for _ in range(3):
        assert (await call(http, gateway.url, key))[0] == 200
    status, _ = await call(http, gateway.url, key, path=DEPOSIT)
    assert status == 403  # MISSING_PERMISSION: counted, but not a use
    row = None
    for _ in range(100):
        async with db.acquire() as conn:
            row = await conn.fetchrow("SELECT last_used_at, host(last_used_ip) AS ip"
                                      " FROM api_keys WHERE key_id = $1", key.key_id)
            counts = {r["code"]: r["requests"] for r in await conn.fetch(
                "SELECT code, sum(requests)::int AS requests FROM key_usage_hourly"
                " WHERE key_id = $1 GROUP BY code", key.key_id)}
        if row["last_used_at"] is not None and counts.get("MISSING_PERMISSION"):
            break
        await asyncio.sleep(0.1)
    assert row is not None and row["ip"] == "127.0.0.1"
    assert abs(row["last_used_at"].timestamp() - time.time()) < 30
    assert counts == {"": 3, "MISSING_PERMISSION": 1}


# --- policy ------------------------------------------------------------------------------


async def test_require_ip_allowlist_tightened_later_refuses_existing_keys_on_its_routes(
    settings: Settings, sandbox: RunningApp, db: asyncpg.Pool, http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    routes = routes_with(tmp_path, "  require_ip_allowlist: []\n")
    live = settings.replace(upstream_url=sandbox.url, routes_path=routes)
    key = await make_key(db, live, permissions=("read", "withdraw"))
    fenced = await make_key(db, live, permissions=("read", "withdraw"), ips=("127.0.0.1",))
    running = await start_gateway(live)
    try:
        assert (await call(http, running.url, key, path=DEPOSIT))[0] == 200
        routes.write_text(routes_with(tmp_path, "  require_ip_allowlist: [withdraw]\n")
                          .read_text())
        assert running.services.reload_routes()
        status, body = await call(http, running.url, key, path=DEPOSIT)
        assert status == 403 and body["error"] == "INVALID_IP_RESTRICTION"
        assert body["message"] == ("The 'withdraw' permission requires an API key with an IP "
                                   "allowlist")
        assert (await call(http, running.url, key))[0] == 200  # read routes: unaffected
        assert (await call(http, running.url, fenced, path=DEPOSIT))[0] == 200
    finally:
        await running.stop()


async def test_dormant_keys_are_refused_from_the_cached_record(
    settings: Settings, sandbox: RunningApp, db: asyncpg.Pool, http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    live = settings.replace(upstream_url=sandbox.url,
                            routes_path=routes_with(tmp_path, "  dormant_after_days: 30\n"))
    idle, used, fresh = (await make_key(db, live), await make_key(db, live),
                         await make_key(db, live))
    async with db.acquire() as conn:
        await conn.execute("UPDATE api_keys SET confirmed_at = now() - interval '40 days'"
                           " WHERE key_id = ANY($1::text[])", [idle.key_id, used.key_id])
        await conn.execute("UPDATE api_keys SET last_used_at = now() - interval '2 days'"
                           " WHERE key_id = $1", used.key_id)
    running = await start_gateway(live)
    try:
        status, body = await call(http, running.url, idle)
        assert status == 401 and body["error"] == "APIKEY_EXPIRED"
        assert "dormant" in str(body["message"])
        assert (await call(http, running.url, used))[0] == 200
        assert (await call(http, running.url, fresh))[0] == 200
        # A refused dormant key does not count as a use: it stays dormant.
        await asyncio.sleep(1.0)
        assert (await call(http, running.url, idle))[0] == 401
        async with db.acquire() as conn:
            assert await conn.fetchval("SELECT last_used_at FROM api_keys WHERE key_id = $1",
                                       idle.key_id) is None
    finally:
        await running.stop()


# --- withdrawal addresses ------------------------------------------------------------------


def withdrawal(address: str) -> bytes:
    return json.dumps({"currency": "BTC", "amount": "0.01",
                       "recipient": {"address": address}}).encode()


async def post_withdrawal(http: aiohttp.ClientSession, url: str, key: IssuedKey,
                          body: bytes) -> tuple[int, dict[str, object]]:
    return await call(http, url, key, method="POST", path=WITHDRAW, data=body,
                      headers={"Content-Type": "application/json"})


async def test_withdrawals_only_to_listed_addresses_forwarded_byte_for_byte(
    gateway: RunningGateway, gateway_settings: Settings, sandbox: RunningApp, db: asyncpg.Pool,
    http: aiohttp.ClientSession,
) -> None:
    key = await make_key(db, gateway_settings, permissions=("withdraw",),
                         addresses=("bc1qgood", "0xAbC"))
    # Odd but valid JSON, spacing and escapes included: it must arrive exactly as sent.
    listed = (b'{ "currency" : "BTC", "amount":"0.01",\n "recipient": {"address": '
              b'"bc1q\\u0067ood", "destination_tag": null}}')
    status, body = await post_withdrawal(http, gateway.url, key, listed)
    assert status == 201, body
    assert body["recipient"] == "bc1qgood"
    seen = await last_request(http, sandbox)
    assert seen["path"] == WITHDRAW
    assert seen["body_sha256"] == hashlib.sha256(listed).hexdigest()
    assert seen["body_length"] == len(listed)

    status, body = await post_withdrawal(http, gateway.url, key, withdrawal("bc1qevil"))
    assert status == 403 and body["error"] == "MISSING_PERMISSION"
    assert "not one of this API key's allowed addresses" in str(body["message"])
    assert (await last_request(http, sandbox))["body_sha256"] == seen["body_sha256"]

    for malformed in (b"not json", b"", b'{"recipient": {}}', b'["bc1qgood"]',
                      b'{"recipient": {"address": "bc1qgood", "address": "bc1qevil"}}',
                      '{"recipient": {"address": "bc1qgood"}}'.encode("utf-16")):
        status, body = await post_withdrawal(http, gateway.url, key, malformed)
        assert status == 400 and body["error"] == "ILLEGAL_CHARS", (malformed, body)
    assert (await last_request(http, sandbox))["body_sha256"] == seen["body_sha256"]

    anywhere = await make_key(db, gateway_settings, permissions=("withdraw",))
    status, _ = await post_withdrawal(http, gateway.url, anywhere, withdrawal("bc1qevil"))
    assert status == 201  # no list: any address the exchange takes
    assert (await call(http, gateway.url, key, path=BALANCES))[0] == 403  # no read: as before


async def test_a_chunked_withdrawal_is_read_whole_checked_and_forwarded(
    gateway: RunningGateway, gateway_settings: Settings, sandbox: RunningApp, db: asyncpg.Pool,
) -> None:
    key = await make_key(db, gateway_settings, permissions=("withdraw",),
                         addresses=("bc1qgood",))
    body = withdrawal("bc1qgood")
    half = len(body) // 2
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half,
                                                    body[half:])
    answer = await raw_request(gateway.port, (
        f"POST {WITHDRAW} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key.token}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n").encode() + chunks,
        until_closed=True)
    assert b"HTTP/1.1 201" in answer, answer[:300]
    async with aiohttp.ClientSession() as http:
        seen = await last_request(http, sandbox)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["content-length"] == str(len(body)) and "transfer-encoding" not in headers


async def test_a_client_without_a_valid_key_never_has_its_withdrawal_body_read(
    gateway: RunningGateway, gateway_settings: Settings, db: asyncpg.Pool,
) -> None:
    """The key steps run before the body is awaited: a bad key is answered at once, with
    the announced body still unsent, and for a good key without an address list the body is
    not needed to decide either."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    started = time.monotonic()
    try:
        writer.write((f"POST {WITHDRAW} HTTP/1.1\r\nHost: x\r\n"
                      "Authorization: Bearer kg_aaaaaaaaaaaaaaaa_" + "a" * 52 + "aaaaaaa\r\n"
                      "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                      ).encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 2)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert time.monotonic() - started < 1.0
    assert b"Connection: close" in answer  # the unread body cannot be told from a request


async def test_a_withdrawal_body_over_the_limit_is_refused(
    settings: Settings, sandbox: RunningApp, db: asyncpg.Pool, http: aiohttp.ClientSession,
) -> None:
    live = settings.replace(upstream_url=sandbox.url, max_body_size=1024)
    key = await make_key(db, live, permissions=("withdraw",), addresses=("bc1qgood",))
    running = await start_gateway(live)
    try:
        big = json.dumps({"recipient": {"address": "bc1qgood"}, "pad": "x" * 2000}).encode()
        status, body = await post_withdrawal(http, running.url, key, big)
        assert status == 413 and body["error"] == "PAYLOAD_TOO_LARGE"
    finally:
        await running.stop()


async def test_an_address_added_later_is_usable_only_after_its_cooldown(
    settings: Settings, sandbox: RunningApp, db: asyncpg.Pool, redis_url: str,
    http: aiohttp.ClientSession, tmp_path: Path,
) -> None:
    cooldown = 2.0
    live = settings.replace(upstream_url=sandbox.url, withdraw_address_cooldown=cooldown)
    key = await make_key(db, live, permissions=("withdraw",), addresses=("bc1qfirst",))
    running = await start_gateway(live)
    other = process_for(live, tmp_path)
    urls = [running.url, other.url]
    cache = RedisKeyCache.from_settings(connect_redis(redis_url, 1.0), live)
    try:
        for url in urls:  # warm, with the old list
            assert (await post_withdrawal(http, url, key, withdrawal("bc1qfirst")))[0] == 201
        async with db.acquire() as conn:
            link = await conn.fetchval(
                "INSERT INTO key_confirmations (key_id, token_hash, expires_at, purpose)"
                " VALUES ($1, $2, now() + interval '30 minutes', 'addresses') RETURNING id",
                key.key_id, secrets.token_bytes(32))
            await request_addresses(conn, key.key_id, ["bc1qsecond"], confirmation_id=link,
                                    actor="test", user_id=key.user_id)
            # Requested, not confirmed: not allowed.
            status, _ = await post_withdrawal(http, running.url, key, withdrawal("bc1qsecond"))
            assert status == 403
            done = await confirm_addresses(conn, key.key_id, link, cooldown=cooldown,
                                           actor="test", user_id=key.user_id, cache=cache)
        assert done.usable_from is not None
        for url in urls:
            status, body = await post_withdrawal(http, url, key, withdrawal("bc1qsecond"))
            assert status == 403 and body["error"] == "MISSING_PERMISSION", (url, body)
            assert "only from" in str(body["message"])
        await asyncio.sleep(max(0.0, done.usable_from.timestamp() - time.time()) + 0.1)
        for url in urls:
            status, body = await post_withdrawal(http, url, key, withdrawal("bc1qsecond"))
            assert status == 201, (url, body)
    finally:
        await cache.aclose()
        other.stop()
        await running.stop()
