"""Needs: PostgreSQL, Redis (see tests/conftest.py) and haproxy (Debian's package, installed by
`scripts/install-test-deps.sh`; missing haproxy fails the test, it does not skip it).

Scale-out on one machine: three `gateway serve` processes (own ports, own status ports)
sharing one PostgreSQL and one Redis, behind haproxy, in front of a sandbox exchange process.
A deleted key is refused by every instance, the per-account rate limit holds across
instances, a config reload reaches every instance, and the client IP seen through haproxy
is the real one.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from gateway.config.settings import Settings
from gateway.keys.lifecycle import delete_key
from gateway.store.redis import RedisKeyCache, connect_redis
from tests.support.haproxy import Haproxy, haproxy_binary
from tests.support.processes import GatewayProcess
from tests.support.servers import issue_key
from tests.support.services import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BALANCES = "/public/v1/account/balances"
ACCOUNT_LIMIT = 10  # per account and minute, for the whole cluster
CLIENT = "127.0.0.2"  # the test's client address: not haproxy's 127.0.0.1


@dataclass
class Cluster:
    settings: Settings
    gateways: list[GatewayProcess]
    proxy: Haproxy
    sandbox_url: str


def _start_sandbox(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "sandbox", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the sandbox exchange did not start") from None
            time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(database_url: str, redis_url: str) -> Iterator[Cluster]:
    folder = Path(tempfile.mkdtemp(prefix="keygate-scaleout-"))
    routes = (ROOT / "tests" / "fixtures" / "routes.yaml").read_text()
    routes = routes.replace("private: {limit: 200,", f"private: {{limit: {ACCOUNT_LIMIT},")
    assert f"limit: {ACCOUNT_LIMIT}," in routes
    (folder / "routes.yaml").write_text(routes)
    sandbox_port = free_port()
    settings = Settings(
        database_url=database_url, redis_url=redis_url,
        redis_prefix=f"kgtest:{secrets.token_hex(6)}:",
        secret_key=secrets.token_urlsafe(32), key_pepper=secrets.token_urlsafe(32),
        routes_path=folder / "routes.yaml", upstream_url=f"http://127.0.0.1:{sandbox_port}",
        data_dir=folder / "data",
    )
    sandbox = _start_sandbox(sandbox_port)
    gateways: list[GatewayProcess] = []
    proxy: Haproxy | None = None
    try:
        for _ in range(3):
            gateways.append(GatewayProcess(settings, extra_env={
                "GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32", "GATEWAY_LOG_FORMAT": "json"}))
        proxy = Haproxy([gw.port for gw in gateways])
        yield Cluster(settings, gateways, proxy, settings.upstream_url or "")
    finally:
        if proxy is not None:
            proxy.stop()
        for gw in gateways:
            gw.stop()
        sandbox.terminate()
        sandbox.wait(10)


async def _get(http: aiohttp.ClientSession, url: str, token: str | None = None,
               **headers: str) -> tuple[int, dict[str, object]]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.get(url, headers=headers) as resp:
        body = await resp.json(content_type=None) if resp.content_length != 0 else {}
        return resp.status, body if isinstance(body, dict) else {"list": body}


async def test_every_instance_answers_through_haproxy(cluster: Cluster) -> None:
    seen: set[str] = set()
    async with aiohttp.ClientSession() as http:
        for _ in range(9):
            status, _ = await _get(http, cluster.proxy.url + "/public/v1/time",
                                   Connection="close")
            assert status == 200
    for _ in range(40):  # access lines are flushed in batches, every half second
        seen = {gw.url for gw in cluster.gateways
                if '"route":"/public/v1/time"' in gw.output()}
        if len(seen) == 3:
            break
        await asyncio.sleep(0.1)
    assert len(seen) == 3, "haproxy should spread requests over all three gateways"


async def test_deleted_key_is_refused_by_every_instance(cluster: Cluster,
                                                         db: asyncpg.Pool) -> None:
    key = await issue_key(db, cluster.settings, ["read"])
    async with aiohttp.ClientSession() as http:
        for gw in cluster.gateways:  # each instance now holds the key in its memory cache
            assert (await _get(http, gw.url + BALANCES, key.token))[0] == 200
        redis = connect_redis(cluster.settings.redis_url or "", 1.0)
        cache = RedisKeyCache.from_settings(redis, cluster.settings)
        try:
            async with db.acquire() as conn:
                await delete_key(conn, key.key_id, actor="test", cache=cache)
        finally:
            await redis.aclose()
        deleted_at = time.monotonic()
        pending = list(cluster.gateways)
        while pending and time.monotonic() - deleted_at < 2.0:
            answers = [await _get(http, gw.url + BALANCES, key.token) for gw in pending]
            pending = [gw for gw, (status, _) in zip(pending, answers, strict=True)
                       if status != 401]
            await asyncio.sleep(0.02)
        assert not pending, "every instance refuses the deleted key within 2 s"
        for _ in range(6):
            status, body = await _get(http, cluster.proxy.url + BALANCES, key.token,
                                      Connection="close")
            assert (status, body["error"]) == (401, "INVALID_APIKEY")


async def test_account_rate_limit_holds_across_instances(cluster: Cluster,
                                                         db: asyncpg.Pool) -> None:
    first = await issue_key(db, cluster.settings, ["read"])
    second = await issue_key(db, cluster.settings, ["read"], user_id=first.user_id)
    allowed: dict[str, int] = {gw.url: 0 for gw in cluster.gateways}
    refused: dict[str, int] = {gw.url: 0 for gw in cluster.gateways}
    async with aiohttp.ClientSession() as http:
        # Two keys of one account, over all three instances in turn: one budget.
        for i in range(3 * ACCOUNT_LIMIT):
            gw = cluster.gateways[i % 3]
            token = (first if i % 2 else second).token
            status, _ = await _get(http, gw.url + BALANCES, token)
            assert status in (200, 429)
            (allowed if status == 200 else refused)[gw.url] += 1
        through_proxy = [(await _get(http, cluster.proxy.url + BALANCES, first.token))[0]
                         for _ in range(3)]
    assert sum(allowed.values()) == ACCOUNT_LIMIT
    assert all(allowed.values()) and all(refused.values()), (allowed, refused)
    assert through_proxy == [429, 429, 429]


async def test_config_reload_reaches_every_instance(cluster: Cluster) -> None:
    routes = cluster.settings.routes_path
    before = routes.stat()
    async with aiohttp.ClientSession() as http:
        for gw in cluster.gateways:
            status, body = await _get(http, gw.url + "/public/v1/currencies")
            assert (status, body["error"]) == (404, "ROUTE_NOT_FOUND")
        routes.write_text(routes.read_text() + (
            "  - {path: /public/v1/currencies, methods: [GET], public: true}\n"))
        # Same mtime as before: the file watcher sees nothing, only SIGHUP reloads.
        os.utime(routes, ns=(before.st_atime_ns, before.st_mtime_ns))
        for gw in cluster.gateways:
            gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        pending = list(cluster.gateways)
        while pending and time.monotonic() < deadline:
            answers = [await _get(http, gw.url + "/public/v1/currencies") for gw in pending]
            pending = [gw for gw, (status, _) in zip(pending, answers, strict=True)
                       if status != 200]
            await asyncio.sleep(0.05)
        assert not pending, "every instance serves the reloaded route table"


async def test_client_ip_through_haproxy_is_the_real_one(cluster: Cluster,
                                                         db: asyncpg.Pool) -> None:
    mine = await issue_key(db, cluster.settings, ["read"], ips=[CLIENT])
    elsewhere = await issue_key(db, cluster.settings, ["read"], ips=["127.0.0.3"])
    connector = aiohttp.TCPConnector(local_addr=(CLIENT, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        # A forged X-Forwarded-For is replaced by haproxy: the allowlist sees the client.
        status, body = await _get(http, cluster.proxy.url + BALANCES, mine.token,
                                  **{"X-Forwarded-For": "203.0.113.9",
                                     "X-Request-Id": "scaleout-ip-1"})
        assert status == 200, body
        status, body = await _get(http, cluster.proxy.url + BALANCES, elsewhere.token,
                                  **{"X-Forwarded-For": "127.0.0.3"})
        assert (status, body["error"]) == (403, "INVALID_IP_RESTRICTION")
        status, seen = await _get(http, cluster.sandbox_url + "/__sandbox/last-request")
        assert status == 200
        headers = seen["headers"]
        assert isinstance(headers, dict)
        # The upstream sees the chain: the client, then haproxy (the gateway's peer).
        assert headers["x-forwarded-for"] == f"{CLIENT}, 127.0.0.1"
        assert headers["x-forwarded-proto"] == "https"  # set by the (trusted) balancer
        # Straight to an instance, the client is not a trusted proxy: its X-Forwarded-*
        # headers are not believed.
        status, _ = await _get(http, cluster.gateways[0].url + BALANCES, elsewhere.token,
                               **{"X-Forwarded-For": "127.0.0.3"})
        assert status == 403
        status, _ = await _get(http, cluster.gateways[0].url + BALANCES, mine.token,
                               **{"X-Forwarded-For": "198.51.100.7",
                                  "X-Forwarded-Proto": "https"})
        assert status == 200
        status, seen = await _get(http, cluster.sandbox_url + "/__sandbox/last-request")
        headers = seen["headers"]
        assert isinstance(headers, dict)
        assert headers["x-forwarded-for"] == CLIENT
        assert headers["x-forwarded-proto"] == "http"
    for _ in range(40):  # access-log lines are flushed twice a second
        lines = [line for gw in cluster.gateways for line in gw.output().splitlines()
                 if '"request_id":"scaleout-ip-1"' in line]
        if lines:
            break
        await asyncio.sleep(0.1)
    assert len(lines) == 1 and f'"client_ip":"{CLIENT}"' in lines[0]


def test_deploy_haproxy_config_is_valid() -> None:
    """deploy/haproxy/haproxy.cfg passes haproxy's own check (its hosts resolve later)."""
    checked = subprocess.run([haproxy_binary(), "-c", "-f",
                              str(ROOT / "deploy" / "haproxy" / "haproxy.cfg")],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
