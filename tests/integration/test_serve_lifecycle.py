"""Needs: PostgreSQL and Redis (tests/conftest.py). `gateway serve` as a process: requests in
flight finish on SIGTERM, and /healthz and /readyz answer on both ports."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import asyncpg
import pytest

from gateway.settings import Settings
from tests.support.processes import GatewayProcess
from tests.support.servers import issue_key

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_drains_requests_in_flight(gateway_settings: Settings, db: asyncpg.Pool,
                                                 workers: int) -> None:
    key = await issue_key(db, gateway_settings)
    process = GatewayProcess(gateway_settings, workers=workers)
    try:
        async with aiohttp.ClientSession() as http:
            slow = asyncio.ensure_future(http.get(
                process.url + "/__sandbox/slow?delay=0.7",
                headers={"Authorization": f"Bearer {key.token}"}))
            await asyncio.sleep(0.3)  # the request is in the upstream now
            process.signal(signal.SIGTERM)
            resp = await slow
            assert resp.status == 200
            resp.release()
            await asyncio.to_thread(process.process.wait, 15)
    finally:
        output = process.stop()
    assert process.process.returncode == 0, output


async def test_health_and_readiness(gateway_settings: Settings) -> None:
    process = GatewayProcess(gateway_settings)
    try:
        async with aiohttp.ClientSession() as http:
            for base in (process.url, f"http://127.0.0.1:{process.status_port}"):
                async with http.get(base + "/healthz") as resp:
                    assert resp.status == 200
                async with http.get(base + "/readyz") as resp:
                    body = await resp.json()
                    assert resp.status == 200, body
                    assert body["checks"]["postgres"] and body["checks"]["upstream"]
    finally:
        process.stop()


async def test_not_ready_without_upstream(gateway_settings: Settings) -> None:
    from tests.support.services import free_port

    process = GatewayProcess(gateway_settings.replace(
        upstream_url=f"http://127.0.0.1:{free_port()}"))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(process.url + "/readyz") as resp:
                body = await resp.json()
                assert resp.status == 503 and body["checks"]["upstream"] is False
    finally:
        process.stop()
