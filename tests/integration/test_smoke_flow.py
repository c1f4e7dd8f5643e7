"""Needs: PostgreSQL, Redis (see tests/conftest.py). A key flows through the real gateway."""

from __future__ import annotations

import aiohttp
import asyncpg
import pytest

from gateway.settings import Settings
from tests.support.servers import RunningApp, issue_key

pytestmark = pytest.mark.integration


async def test_read_key_gets_balances(gateway: RunningApp, db: asyncpg.Pool,
                                      gateway_settings: Settings) -> None:
    key = await issue_key(db, gateway_settings, ["read"])
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.url}/public/v1/account/balances",
                            headers={"Authorization": f"Bearer {key.token}"}) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            assert resp.headers["X-Request-Id"]
            assert resp.headers["X-RateLimit-Limit"] == "200"
        async with http.post(f"{gateway.url}/public/v1/account/orders", json={},
                             headers={"Authorization": f"Bearer {key.token}"}) as resp:
            body = await resp.json()
            assert resp.status == 403
            assert body["error"] == "MISSING_PERMISSION"
            assert "trade" in body["message"]
