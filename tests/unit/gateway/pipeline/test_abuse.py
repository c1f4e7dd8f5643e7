"""`AuthFailureGuard` counting failed authentications in process: with no Redis, and with a
Redis that does not answer (the same local counting takes over)."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.pipeline.abuse import AuthFailureGuard
from tests.support.services import free_port


def guard(limit: int = 3, window: float = 60.0, block_for: float = 600.0) -> AuthFailureGuard:
    return AuthFailureGuard(None, "unit:", limit, window, block_for)


async def test_the_limit_th_failure_blocks_the_address() -> None:
    g = guard()
    for _ in range(2):
        await g.record_failure("198.51.100.7")
        assert g.blocked_for("198.51.100.7") == 0
    await g.record_failure("198.51.100.7")
    assert 599 < g.blocked_for("198.51.100.7") <= 600
    assert g.has_blocks
    assert g.blocked_for("198.51.100.8") == 0


async def test_failures_are_counted_per_address() -> None:
    g = guard()
    for ip in ("198.51.100.7", "198.51.100.8", "2001:db8::1", "198.51.100.7",
               "198.51.100.8", "2001:db8::1"):
        await g.record_failure(ip)
    assert not g.has_blocks


async def test_failures_older_than_the_window_do_not_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    g = guard(window=10.0)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    await g.record_failure("198.51.100.7")
    await g.record_failure("198.51.100.7")
    monkeypatch.setattr(time, "time", lambda: now + 11)
    await g.record_failure("198.51.100.7")
    assert g.blocked_for("198.51.100.7") == 0
    await g.record_failure("198.51.100.7")
    await g.record_failure("198.51.100.7")
    assert g.blocked_for("198.51.100.7") > 0


async def test_a_block_ends_and_counting_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    g = guard(block_for=5.0)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    for _ in range(3):
        await g.record_failure("198.51.100.7")
    assert g.blocked_for("198.51.100.7") > 0
    monkeypatch.setattr(time, "time", lambda: now + 6)
    assert g.blocked_for("198.51.100.7") == 0
    assert not g.has_blocks
    await g.record_failure("198.51.100.7")  # the count was reset by the block
    assert g.blocked_for("198.51.100.7") == 0


def test_block_messages_from_other_gateways() -> None:
    g = guard()
    g.on_block_message(f"203.0.113.9 {time.time() + 30}")
    assert 29 < g.blocked_for("203.0.113.9") <= 30
    g.on_block_message("203.0.113.10 not-a-time")  # ignored, not raised
    g.on_block_message("garbage")
    assert g.blocked_for("203.0.113.10") == 0
    assert g.blocked_for("garbage") == 0


async def test_load_without_redis_is_a_no_op() -> None:
    g = guard()
    await g.load()
    assert not g.has_blocks


async def test_a_redis_that_does_not_answer_falls_back_to_local_counting() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5,
                            retry=Retry(NoBackoff(), 0))
    try:
        g = AuthFailureGuard(client, "unit:", 3, 60.0, 600.0)
        await g.load()  # logged, not raised
        for _ in range(3):
            await g.record_failure("198.51.100.7")
        assert g.blocked_for("198.51.100.7") > 0
    finally:
        await client.aclose()
