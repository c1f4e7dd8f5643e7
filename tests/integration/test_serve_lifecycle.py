"""Needs: PostgreSQL and Redis (tests/conftest.py). `gateway serve` as a process: requests in
flight finish on SIGTERM, and /healthz and /readyz answer on both ports."""

from __future__ import annotations

import asyncio
import signal
import ssl
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from gateway.config.settings import Settings
from tests.support.processes import GatewayProcess
from tests.support.servers import issue_key
from tests.support.tls import self_signed

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
            async with http.get(process.url + "/healthz",
                                headers={"X-Request-Id": "probe-1"}) as resp:
                assert resp.headers["X-Request-Id"] == "probe-1"  # every answer carries one
            for base in (process.url, f"http://127.0.0.1:{process.status_port}"):
                async with http.get(base + "/healthz") as resp:
                    assert resp.status == 200
                async with http.get(base + "/readyz") as resp:
                    body = await resp.json()
                    assert resp.status == 200, body
                    assert body["checks"]["postgres"] and body["checks"]["upstream"]
    finally:
        process.stop()


@pytest.mark.parametrize("workers", [1, 2])
async def test_status_port_root_links_its_pages(gateway_settings: Settings, workers: int) -> None:
    """The status URL as printed and documented (`http://127.0.0.1:8082/`) is a page, not a 404,
    whether one process answers it or the supervisor of several."""
    import re

    process = GatewayProcess(gateway_settings, workers=workers)
    status = f"http://127.0.0.1:{process.status_port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(status + "/") as resp:
                assert resp.status == 200
                assert resp.content_type == "text/html"
                links = re.findall(r'href="([^"]+)"', await resp.text())
            assert sorted(links) == ["/healthz", "/metrics", "/readyz"]
            for link in links:
                async with http.get(status + link) as resp:
                    assert resp.status == 200, link
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


async def test_tls_termination_in_the_gateway(gateway_settings: Settings, db: asyncpg.Pool,
                                              tmp_path: Path) -> None:
    cert, key_file = self_signed(tmp_path)
    key = await issue_key(db, gateway_settings)
    process = GatewayProcess(gateway_settings, scheme="https", extra_env={
        "GATEWAY_TLS_CERT": str(cert), "GATEWAY_TLS_KEY": str(key_file)})
    trusted = ssl.create_default_context(cafile=str(cert))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(process.url + "/public/v1/account/balances", ssl=trusted,
                                headers={"Authorization": f"Bearer {key.token}"}) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientError):  # plain HTTP gets nowhere
                async with http.get(f"http://127.0.0.1:{process.port}/healthz") as resp:
                    await resp.read()
    finally:
        process.stop()


def test_bad_certificate_stops_startup_clearly(gateway_settings: Settings,
                                               tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support.processes import environment_for

    (tmp_path / "cert.pem").write_text("not a certificate")
    env = environment_for(gateway_settings) | {"GATEWAY_TLS_CERT": str(tmp_path / "cert.pem")}
    from tests.support.services import free_port

    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--port",
                             str(free_port()), "--status-port", str(free_port())], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "not a usable PEM certificate" in result.stderr


async def test_restarted_worker_stops_with_the_supervisor(gateway_settings: Settings) -> None:
    """A worker forked by the running supervisor (a restart) must not inherit its signal
    handling: that one once swallowed SIGTERM and outlived everything."""
    import psutil

    process = GatewayProcess(gateway_settings, workers=2)
    try:
        supervisor = psutil.Process(process.process.pid)
        first = supervisor.children()
        assert len(first) == 2
        first[0].kill()
        for _ in range(100):  # the supervisor notices within a second and forks a new one
            workers = [c for c in supervisor.children() if c.is_running()
                       and c.status() != psutil.STATUS_ZOMBIE]
            if len(workers) == 2 and first[0] not in workers:
                break
            await asyncio.sleep(0.05)
        replacement = next(w for w in workers if w.pid != first[1].pid)
        # Stop while the replacement is still starting, before it has handlers of its own.
        process.process.terminate()
        await asyncio.to_thread(process.process.wait, 20)
        _gone, alive = psutil.wait_procs([replacement, first[1]], timeout=10)
        assert not alive, f"workers outlived the supervisor: {[p.pid for p in alive]}"
    finally:
        process.stop()


async def test_an_https_upstream_is_verified_and_served(settings: Settings, db: asyncpg.Pool,
                                                        tmp_path: Path) -> None:
    """The upstream leg speaks TLS to an https origin, checking its certificate: against the
    configured authority it is served, against the system's a self-signed one is refused."""
    from aiohttp import web

    from sandbox import build_sandbox_app
    from tests.support.servers import start_gateway

    cert, key_file = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(str(cert), str(key_file))
    runner = web.AppRunner(build_sandbox_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    origin = f"https://localhost:{port}"
    key = await issue_key(db, settings)
    trusting = await start_gateway(settings.replace(upstream_url=origin, upstream_ca_file=cert))
    doubting = await start_gateway(settings.replace(upstream_url=origin))
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(3):  # the pooled TLS connection is reused
                async with http.get(trusting.url + "/public/v1/account/balances",
                                    headers={"Authorization": f"Bearer {key.token}"}) as resp:
                    assert resp.status == 200
                    assert "balances" in await resp.json()
            async with http.get(doubting.url + "/public/v1/account/balances",
                                headers={"Authorization": f"Bearer {key.token}"}) as resp:
                assert resp.status == 502  # SECURITY: an unverified upstream gets nothing
                assert (await resp.json())["error"] == "SERVICE_UNAVAILABLE"
    finally:
        await trusting.stop()
        await doubting.stop()
        await runner.cleanup()
