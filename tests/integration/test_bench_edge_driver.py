"""The benchmark's in-process edge driver (what callgrind counts) against the real edge, with
real PostgreSQL and Redis: it must drive the request path it claims to, and refuse to count
anything else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bench.edge_driver import EdgeDriver, request_bytes
from bench.gateways import Secrets, new_key, new_user
from gateway.config.settings import Settings
from gateway.services import Gateway

pytestmark = pytest.mark.integration


async def _token(database_url: str, settings: Settings) -> str:
    assert settings.secret_key and settings.key_pepper
    conn = await asyncpg.connect(database_url)
    try:
        user_id = await new_user(conn)
        _, token = await new_key(conn, user_id, Secrets(settings.secret_key,
                                                        settings.key_pepper))
        return token
    finally:
        await conn.close()


@pytest.fixture
def driver_settings(settings: Settings) -> Settings:
    # Never connected to: the driver's upstream connection is a fake one.
    return settings.replace(upstream_url="http://127.0.0.1:9", rate_limits=False)


@pytest.fixture
async def services(driver_settings: Settings) -> AsyncIterator[Gateway]:
    opened = await Gateway.open(driver_settings)
    yield opened
    await opened.aclose()


async def test_warm_requests_are_answered_within_their_two_calls(
        services: Gateway, driver_settings: Settings, database_url: str) -> None:
    token = await _token(database_url, driver_settings)
    driver = EdgeDriver(services, request_bytes(token))
    await driver.run_waiting(3)  # the first request looks the key up
    driver.run_at_once(200)
    assert driver.last_forwarded.startswith(b"GET /public/v1/account/balances HTTP/1.1\r\n")
    assert not driver.client_side.closed


async def test_a_request_that_waits_is_not_counted_as_warm(
        services: Gateway, driver_settings: Settings, database_url: str) -> None:
    # A key no cache has seen: its lookup waits for Redis, so nothing is forwarded at once.
    driver = EdgeDriver(services, request_bytes(await _token(database_url, driver_settings)))
    with pytest.raises(RuntimeError, match="0 forwarded"):
        driver.run_at_once(1)


async def test_an_unknown_key_is_not_counted_either(
        services: Gateway, driver_settings: Settings) -> None:
    # Refused, so never forwarded: a count of refusals is no count of the request path.
    driver = EdgeDriver(services, request_bytes("kg_nosuchkey_" + "x" * 40))
    with pytest.raises(RuntimeError, match="0 forwarded, 0 answered 200"):
        await driver.run_waiting(1)


async def test_rate_limited_requests_are_answered_at_once_from_a_lease(
        driver_settings: Settings, database_url: str) -> None:
    limited = driver_settings.replace(rate_limits=True)
    opened = await Gateway.open(limited)
    try:
        driver = EdgeDriver(opened, request_bytes(await _token(database_url, limited)))
        await driver.run_waiting(50)  # the first wait for a lease of the budget
        await asyncio.sleep(0.1)  # a busy loop's turns: the lease renewed ahead of need lands
        driver.run_at_once(5)  # then the lease answers, with no round trip
    finally:
        await opened.aclose()


async def test_with_no_lease_every_rate_limited_request_waits_for_redis(
        driver_settings: Settings, database_url: str) -> None:
    exact = driver_settings.replace(rate_limits=True, rate_limit_lease_ttl=0)
    opened = await Gateway.open(exact)
    try:
        driver = EdgeDriver(opened, request_bytes(await _token(database_url, exact)))
        await driver.run_waiting(20)
        with pytest.raises(RuntimeError, match="0 forwarded"):
            driver.run_at_once(1)  # the rate limit's round trip is never answered at once
    finally:
        await opened.aclose()
