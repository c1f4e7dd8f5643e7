"""Needs: PostgreSQL (tests/conftest.py). Key lifecycle in the database: expiry, rolls,
withdrawal addresses and their cooldown, what the gateway's lookup and introspection read,
last use and hourly usage counted from batches of outcomes, the policy's impact counts."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gateway.config.routes import KeyPolicy
from gateway.config.settings import Settings
from gateway.keys.accounts import create_user
from gateway.keys.introspection import describe_key
from gateway.keys.lifecycle import (
    KeyNotFound,
    PolicyRefused,
    activate,
    activate_key,
    confirm_addresses,
    create_key,
    delete_key,
    list_keys,
    request_addresses,
    roll_key,
)
from gateway.keys.policy import policy_impact
from gateway.keys.usage import UsageRecorder
from gateway.observability.outcomes import Outcome
from gateway.store.postgres import PostgresKeyStore

pytestmark = pytest.mark.integration


async def _user(conn: asyncpg.Connection) -> int:
    return await create_user(conn, f"u{secrets.token_hex(6)}@example.com",
                             "correct horse battery", verified=True)


async def _active(conn: asyncpg.Connection, settings: Settings, user_id: int,
                  **fields: object) -> str:
    fields.setdefault("permissions", ["read"])
    fields.setdefault("allowed_ips", [])
    key_id = await create_key(conn, user_id=user_id, name="bot", actor="test",
                              **fields)  # type: ignore[arg-type]
    await activate_key(conn, key_id, pepper=settings.key_pepper or "", hash_version=1,
                       actor="test")
    return key_id


async def test_expiry_and_addresses_reach_the_lookup_record(settings: Settings,
                                                            db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        user_id = await _user(conn)
        before = time.time()
        key_id = await _active(conn, settings, user_id, lifetime=3600.0,
                               withdraw_addresses=["bc1qaaa", "0xBBB"])
    record = await PostgresKeyStore(db).get(key_id)
    assert record is not None
    assert record.expires_at is not None
    assert before + 3600 - 5 < record.expires_at < time.time() + 3600 + 5
    assert record.confirmed_at is not None and record.last_used_at is None
    # Given at creation: usable at once.
    assert [a for a, _ in record.withdraw_addresses] == ["0xBBB", "bc1qaaa"]
    assert all(at <= time.time() + 1 for _, at in record.withdraw_addresses)


async def test_addresses_added_later_wait_for_the_link_and_then_the_cooldown(
    settings: Settings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        user_id = await _user(conn)
        key_id = await _active(conn, settings, user_id, withdraw_addresses=["first"])
        first = await conn.fetchval(
            "INSERT INTO key_confirmations (key_id, token_hash, expires_at, purpose)"
            " VALUES ($1, $2, now() + interval '30 minutes', 'addresses') RETURNING id",
            key_id, secrets.token_bytes(32))
        await request_addresses(conn, key_id, ["second"], confirmation_id=first,
                                actor="test", user_id=user_id)
        newer = await conn.fetchval(
            "INSERT INTO key_confirmations (key_id, token_hash, expires_at, purpose)"
            " VALUES ($1, $2, now() + interval '30 minutes', 'addresses') RETURNING id",
            key_id, secrets.token_bytes(32))
        await request_addresses(conn, key_id, ["third"], confirmation_id=newer,
                                actor="test", user_id=user_id)
        record = await PostgresKeyStore(db).get(key_id)
        assert record is not None and [a for a, _ in record.withdraw_addresses] == ["first"]
        # The older link confirms nothing: its addresses moved to the newer one.
        stale = await confirm_addresses(conn, key_id, first, cooldown=3600, actor="test",
                                        user_id=user_id)
        assert stale.addresses == () and stale.usable_from is None
        done = await confirm_addresses(conn, key_id, newer, cooldown=3600, actor="test",
                                       user_id=user_id)
        assert done.addresses == ("second", "third") and done.usable_from is not None
        assert done.usable_from > datetime.now(UTC) + timedelta(minutes=59)
        changed = await conn.fetchval("SELECT changed_at FROM api_keys WHERE key_id = $1",
                                      key_id)
        assert changed is not None
        (shown,) = [k for k in await list_keys(conn, user_id) if k.key_id == key_id]
    record = await PostgresKeyStore(db).get(key_id)
    assert record is not None
    usable = dict(record.withdraw_addresses)
    assert usable["first"] < time.time() < usable["second"] == usable["third"]
    assert {a.address for a in shown.withdraw_addresses} == {"first", "second", "third"}


async def test_a_roll_copies_the_key_and_ends_the_old_one_after_the_overlap(
    settings: Settings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        user_id = await _user(conn)
        old = await _active(conn, settings, user_id, permissions=["read", "withdraw"],
                            allowed_ips=["192.0.2.1"], lifetime=10 * 86400.0,
                            withdraw_addresses=["bc1qaaa"])
        new = await roll_key(conn, old, overlap=3600.0, actor="test", user_id=user_id)
        pending = await PostgresKeyStore(db).get(old)
        assert pending is not None and pending.expires_at is not None
        assert pending.expires_at > time.time() + 9 * 86400  # untouched until confirmed
        done = await activate(conn, new, pepper=settings.key_pepper or "", hash_version=1,
                              actor="test")
        assert done.rolled_from == old and done.old_expires_at is not None
        assert abs(done.old_expires_at.timestamp() - (time.time() + 3600)) < 5
        keys = {k.key_id: k for k in await list_keys(conn, user_id)}
        actions = await conn.fetch(
            "SELECT action, detail FROM audit_log WHERE action = 'key.rolled' AND key_id = $1",
            old)
    old_record = await PostgresKeyStore(db).get(old)
    new_record = await PostgresKeyStore(db).get(new)
    assert old_record is not None and new_record is not None
    assert new_record.account_id == old_record.account_id
    assert new_record.permissions == old_record.permissions
    assert new_record.allowed_ips == old_record.allowed_ips
    assert [a for a, _ in new_record.withdraw_addresses] == ["bc1qaaa"]
    assert new_record.expires_at is not None
    assert new_record.expires_at > time.time() + 9.9 * 86400  # the same lifetime, from now
    assert keys[old].replaced_by == new and keys[new].rolled_from == old
    assert keys[new].name == keys[old].name
    assert len(actions) == 1
    assert f'"new_key_id": "{new}"' in actions[0]["detail"]
    assert f'"old_key_id": "{old}"' in actions[0]["detail"]


async def test_a_roll_keeps_an_earlier_expiry_and_keeps_to_the_policy(
    settings: Settings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        user_id = await _user(conn)
        soon = await _active(conn, settings, user_id, lifetime=60.0)
        new = await roll_key(conn, soon, overlap=86400.0, actor="test")
        done = await activate(conn, new, pepper=settings.key_pepper or "", hash_version=1,
                              actor="test")
        assert done.old_expires_at is not None
        assert done.old_expires_at < datetime.now(UTC) + timedelta(seconds=65)
        forever = await _active(conn, settings, user_id, permissions=["withdraw"])
        with pytest.raises(PolicyRefused) as refused:
            await roll_key(conn, forever, overlap=0, actor="test",
                           policy=KeyPolicy(require_ip_allowlist=frozenset({"withdraw"})))
        assert set(refused.value.problems) == {"ips"}
        capped = await roll_key(conn, forever, overlap=0, actor="test",
                                policy=KeyPolicy(max_key_lifetime_days=7))
        lifetime = await conn.fetchval("SELECT lifetime FROM api_keys WHERE key_id = $1",
                                       capped)
        assert lifetime == 7 * 86400.0
        other = await _user(conn)
        with pytest.raises(KeyNotFound):
            await roll_key(conn, forever, overlap=0, actor="test", user_id=other)
        await delete_key(conn, forever, actor="test")
        with pytest.raises(KeyNotFound):
            await roll_key(conn, forever, overlap=0, actor="test")


async def test_creation_refused_by_the_policy_writes_nothing(settings: Settings,
                                                              db: asyncpg.Pool) -> None:
    policy = KeyPolicy(require_ip_allowlist=frozenset({"withdraw"}), max_key_lifetime_days=30)
    async with db.acquire() as conn:
        user_id = await _user(conn)
        with pytest.raises(PolicyRefused) as refused:
            await create_key(conn, user_id=user_id, name="x", permissions=["withdraw"],
                             allowed_ips=[], actor="test", policy=policy)
        assert set(refused.value.problems) == {"ips", "expires_in"}
        assert await conn.fetchval("SELECT count(*) FROM api_keys WHERE user_id = $1",
                                   user_id) == 0
        await create_key(conn, user_id=user_id, name="x", permissions=["withdraw"],
                         allowed_ips=["192.0.2.1"], actor="test", policy=policy,
                         lifetime=30 * 86400.0)


async def test_introspection_describes_the_key_from_postgres(settings: Settings,
                                                             db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        user_id = await _user(conn)
        key_id = await _active(conn, settings, user_id, permissions=["trade", "read"],
                               allowed_ips=["192.0.2.9", "2001:db8::1"], lifetime=86400.0,
                               withdraw_addresses=["bc1q"])
        await conn.execute("UPDATE api_keys SET last_used_at = '2030-01-02T03:04:05.678Z',"
                           " last_used_ip = '198.51.100.7' WHERE key_id = $1", key_id)
    described = await describe_key(db, key_id)
    assert described is not None
    assert set(described) == {"key_id", "name", "permissions", "ip_allowlist", "created_at",
                              "expires_at", "last_used_at", "last_used_ip",
                              "withdraw_addresses"}
    assert described["key_id"] == key_id and described["name"] == "bot"
    assert described["permissions"] == ["read", "trade"]
    assert described["ip_allowlist"] == ["192.0.2.9", "2001:db8::1"]
    assert described["last_used_at"] == "2030-01-02T03:04:05.678Z"
    assert described["last_used_ip"] == "198.51.100.7"
    assert str(described["created_at"]).endswith("Z")
    assert str(described["expires_at"]).endswith("Z")
    assert described["withdraw_addresses"] == [
        {"address": "bc1q", "usable_from": described["withdraw_addresses"][0]["usable_from"]}]  # type: ignore[index]
    async with db.acquire() as conn:
        await delete_key(conn, key_id, actor="test")
    assert await describe_key(db, key_id) is None


def _outcome(key_id: str | None, account: int | None, at_ms: int, code: str = "",
             ip: str = "192.0.2.1") -> Outcome:
    return Outcome(at_ms, "r", ip, "GET", "/p", "/p", 401 if code else 200, code, key_id,
                   account, 10, None)


async def test_last_use_and_hourly_counts_are_written_in_batches(settings: Settings,
                                                                 db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        user_id = await _user(conn)
        key_id = await _active(conn, settings, user_id)
        claimed = await _active(conn, settings, user_id)
    usage = UsageRecorder(db, interval=60, retention=30 * 86400.0)
    hour = int(time.time() // 3600) * 3_600_000
    usage.read([
        _outcome(key_id, user_id, hour + 1000, ip="192.0.2.1"),
        _outcome(key_id, user_id, hour + 3000, ip="2001:db8::5"),
        _outcome(key_id, user_id, hour + 2000, ip="192.0.2.2"),  # older: not the last use
        _outcome(key_id, user_id, hour + 4000, code="INVALID_IP_RESTRICTION", ip="203.0.113.9"),
        _outcome(key_id, user_id, hour - 3_600_000, code="RATELIMIT"),
        # A key id claimed by a client whose secret was wrong: not counted at all.
        _outcome(claimed, None, hour + 5000, code="INVALID_APIKEY"),
    ])
    await usage.flush()
    usage.read([_outcome(key_id, user_id, hour + 6000, ip="2001:db8::5")])
    await usage.flush()
    async with db.acquire() as conn:
        row = await conn.fetchrow("SELECT last_used_at, host(last_used_ip) AS ip FROM api_keys"
                                  " WHERE key_id = $1", key_id)
        counts = {(r["hour"].timestamp(), r["code"]): r["requests"] for r in await conn.fetch(
            "SELECT hour, code, requests FROM key_usage_hourly WHERE key_id = $1", key_id)}
        other = await conn.fetchval("SELECT count(*) FROM key_usage_hourly WHERE key_id = $1",
                                    claimed)
        unused = await conn.fetchval("SELECT last_used_at FROM api_keys WHERE key_id = $1",
                                     claimed)
    assert row["ip"] == "2001:db8::5"
    assert abs(row["last_used_at"].timestamp() - (hour + 6000) / 1000) < 0.01
    assert counts == {(hour / 1000, ""): 4, (hour / 1000, "INVALID_IP_RESTRICTION"): 1,
                      (hour / 1000 - 3600, "RATELIMIT"): 1}
    assert other == 0 and unused is None


async def test_old_usage_counts_are_pruned(settings: Settings, db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        user_id = await _user(conn)
        key_id = await _active(conn, settings, user_id)
        await conn.execute(
            "INSERT INTO key_usage_hourly (key_id, hour, code, requests) VALUES"
            " ($1, date_trunc('hour', now()) - interval '3 days', '', 5),"
            " ($1, date_trunc('hour', now()), '', 7)", key_id)
    usage = UsageRecorder(db, interval=60, retention=2 * 86400.0)
    await usage.flush()  # the first flush prunes
    async with db.acquire() as conn:
        left = [r["requests"] for r in await conn.fetch(
            "SELECT requests FROM key_usage_hourly WHERE key_id = $1", key_id)]
    assert left == [7]


async def test_a_usage_flush_that_fails_keeps_its_batch(settings: Settings,
                                                       db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        user_id = await _user(conn)
        key_id = await _active(conn, settings, user_id)
    dead = await asyncpg.create_pool("postgresql://postgres@127.0.0.1:1/none", min_size=0)
    usage = UsageRecorder(dead, interval=60, retention=86400.0)
    usage.read([_outcome(key_id, user_id, int(time.time() * 1000))])
    await usage.flush()
    await dead.close()
    usage._pool = db  # the database is back
    await usage.flush()
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT sum(requests) FROM key_usage_hourly"
                                   " WHERE key_id = $1", key_id) == 1
        assert await conn.fetchval("SELECT last_used_at FROM api_keys WHERE key_id = $1",
                                   key_id) is not None


async def test_policy_impact_counts_existing_keys(settings: Settings, db: asyncpg.Pool,
                                                  pg_server_url: str) -> None:
    # A database of its own: the counts must not see other tests' keys.
    from gateway.ops.runtime import migrate_database
    from tests.support import services

    server = pg_server_url
    url = await asyncio.to_thread(services.create_database, server, "keygate_policy")
    try:
        await migrate_database(url)
        conn = await asyncpg.connect(url)
        try:
            user_id = await _user(conn)
            for _ in range(3):
                await _active(conn, settings, user_id, permissions=["withdraw"])
            await _active(conn, settings, user_id, permissions=["withdraw"],
                          allowed_ips=["192.0.2.1"], lifetime=3600.0)
            idle = await _active(conn, settings, user_id)
            await conn.execute("UPDATE api_keys SET confirmed_at = now() - interval '40 days'"
                               " WHERE key_id = $1", idle)
            lines = await policy_impact(conn, KeyPolicy(
                require_ip_allowlist=frozenset({"withdraw"}), max_key_lifetime_days=30,
                dormant_after_days=30))
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(services.drop_database, server, url)
    assert lines == [
        "policy require_ip_allowlist [withdraw]: 3 existing keys with withdraw have no IP "
        "allowlist and will be refused on withdraw routes",
        "policy max_key_lifetime_days 30: 4 existing keys have no expiry or a later one; they "
        "keep working (the rule applies to new keys and rolls)",
        "policy dormant_after_days 30: 1 existing key has not been used for 30 days and will "
        "be refused (APIKEY_EXPIRED)",
    ]
