"""Needs: PostgreSQL, Redis (see tests/conftest.py). Runs real `gateway serve` processes.

Known traffic goes through the gateway; then `/metrics` on the status port must count it
exactly, the JSON access log must have one line per request (key id, never the secret), the
audit log must hold the denials worth investigating, and `gateway support` must find all of
that by request id.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.settings import Settings
from gateway.keys.lifecycle import delete_key
from gateway.store.redis import RedisKeyCache, connect_redis
from tests.support.processes import GatewayProcess, environment_for
from tests.support.servers import RunningApp, issue_key

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BALANCES = "/public/v1/account/balances"


def small_limit_routes(folder: Path, limit: int) -> Path:
    """The test route table with a private (per-account) limit of `limit` a minute."""
    text = (ROOT / "tests" / "fixtures" / "routes.yaml").read_text()
    text = text.replace("private: {limit: 200,", f"private: {{limit: {limit},")
    assert f"limit: {limit}," in text
    path = folder / "routes.yaml"
    path.write_text(text)
    return path


def samples(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def scrape(http: aiohttp.ClientSession, port: int) -> str:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def wait_for_metric(http: aiohttp.ClientSession, port: int, name: str, value: float,
                          timeout: float = 5.0, **labels: str) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = await scrape(http, port)
        if samples(text, name, **labels) >= value or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.1)


async def run_cli(settings: Settings, *args: str) -> tuple[int, str]:
    """`gateway ARGS...` against the test's stores: (exit status, stdout + stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args, env=environment_for(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, output.decode()


def access_lines(output: str) -> list[dict[str, object]]:
    lines = []
    for line in output.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if "request_id" in entry:
                lines.append(entry)
    return lines


@pytest.fixture
def observed_settings(settings: Settings, sandbox: RunningApp, tmp_path: Path) -> Settings:
    return settings.replace(upstream_url=sandbox.url,
                            routes_path=small_limit_routes(tmp_path, 5))


@pytest.fixture
def processes() -> Iterator[list[GatewayProcess]]:
    """Every process a test starts, stopped at its end whatever happens."""
    started: list[GatewayProcess] = []
    yield started
    for process in started:
        process.stop()


async def test_metrics_access_log_and_audit_count_known_traffic(
    observed_settings: Settings, db: asyncpg.Pool, processes: list[GatewayProcess],
) -> None:
    settings = observed_settings
    # Keys first: their activation notices reach no gateway, so invalidations start at 0.
    first = await issue_key(db, settings, ["read"])
    second = await issue_key(db, settings, ["read"])
    gw = GatewayProcess(settings, extra_env={"GATEWAY_LOG_FORMAT": "json"})
    processes.append(gw)
    auth1 = {"Authorization": f"Bearer {first.token}"}
    auth2 = {"Authorization": f"Bearer {second.token}"}

    async with aiohttp.ClientSession() as http:
        async def call(method: str, path: str, headers: dict[str, str] | None = None) -> int:
            async with http.request(method, gw.url + path, headers=headers or {}) as resp:
                await resp.read()
                return resp.status

        for _ in range(3):
            assert await call("GET", "/public/v1/time") == 200
        assert await call("GET", BALANCES, auth1 | {"X-Request-Id": "obs-first-1"}) == 200
        assert await call("GET", BALANCES, auth1) == 200
        assert await call("POST", "/public/v1/account/orders",
                          auth1 | {"X-Request-Id": "obs-denied-1"}) == 403
        assert await call("GET", "/no/such/route") == 404
        assert await call("GET", BALANCES) == 401
        assert await call("GET", "/__sandbox/slow?delay=2", auth1) == 504
        # The second account: 5 a minute, so the sixth is refused.
        statuses = [await call("GET", BALANCES, auth2) for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        # Delete the first key: PostgreSQL NOTIFY and Redis pub/sub both announce it.
        redis = connect_redis(settings.redis_url or "", 1.0)
        cache = RedisKeyCache.from_settings(redis, settings)
        async with db.acquire() as conn:
            await delete_key(conn, first.key_id, actor="test", cache=cache)
        await redis.aclose()
        await wait_for_metric(http, gw.status_port, "keygate_invalidations_total", 2)
        assert await call("GET", BALANCES, auth1 | {"X-Request-Id": "obs-deleted-1"}) == 401

        text = await scrape(http, gw.status_port)

    def requests(route: str, method: str, status: str, code: str = "") -> float:
        return samples(text, "keygate_requests_total", route=route, method=method,
                       status=status, code=code)

    assert requests("/public/v1/time", "GET", "200") == 3
    assert requests(BALANCES, "GET", "200") == 2 + 5
    assert requests("/public/v1/account/orders", "POST", "403", "MISSING_PERMISSION") == 1
    assert requests("unmatched", "GET", "404", "ROUTE_NOT_FOUND") == 1
    assert requests(BALANCES, "GET", "401", "MISSING_CREDENTIALS") == 1
    assert requests(BALANCES, "GET", "401", "INVALID_APIKEY") == 1
    assert requests(BALANCES, "GET", "429", "RATELIMIT") == 1
    assert requests("/__sandbox/slow", "GET", "504", "GATEWAY_TIMEOUT") == 1
    assert samples(text, "keygate_requests_total") == 3 + 7 + 1 + 1 + 1 + 1 + 1 + 1
    # Latency: one observation per request; upstream time only when the upstream was asked.
    assert samples(text, "keygate_request_seconds_count", route=BALANCES) == 7 + 1 + 1 + 1
    assert samples(text, "keygate_upstream_seconds_count", route=BALANCES) == 7
    assert samples(text, "keygate_rate_limited_total", route=BALANCES) == 1
    assert samples(text, "keygate_upstream_errors_total", route="/__sandbox/slow",
                   code="GATEWAY_TIMEOUT") == 1
    # Key lookups: each key's first use misses memory and Redis and is answered by
    # PostgreSQL; later uses hit memory; after the deletion, the Redis tombstone answers.
    assert samples(text, "keygate_key_cache_total", layer="memory", result="hit") == 3 + 5
    assert samples(text, "keygate_key_cache_total", layer="memory", result="miss") == 3
    assert samples(text, "keygate_key_cache_total", layer="redis", result="hit") == 1
    assert samples(text, "keygate_key_cache_total", layer="redis", result="miss") == 2
    assert samples(text, "keygate_key_store_lookups_total", result="answered") == 2
    assert samples(text, "keygate_invalidations_total") == 2

    output = gw.stop()
    # SECURITY: the log names keys by id; no token (hence no secret) ever appears in it.
    assert first.token not in output and second.token not in output
    lines = access_lines(output)
    assert len(lines) == 3 + 7 + 1 + 1 + 1 + 1 + 1 + 1
    by_id = {str(line["request_id"]): line for line in lines}
    ok = by_id["obs-first-1"]
    assert ok["key_id"] == first.key_id and ok["account_id"] == first.user_id
    assert ok["route"] == BALANCES and ok["status"] == 200 and ok["error"] is None
    assert ok["client_ip"] == "127.0.0.1" and ok["method"] == "GET"
    assert isinstance(ok["duration_ms"], float) and isinstance(ok["upstream_ms"], float)
    denied = by_id["obs-denied-1"]
    assert denied["status"] == 403 and denied["error"] == "MISSING_PERMISSION"
    assert denied["upstream_ms"] is None
    deleted = by_id["obs-deleted-1"]  # the id the client claimed, no account: it was refused
    assert deleted["key_id"] == first.key_id and deleted["account_id"] is None

    rows = await db.fetch(
        "SELECT request_id, action, actor, key_id, user_id, host(client_ip) AS ip, detail"
        " FROM audit_log WHERE request_id = ANY($1::text[]) ORDER BY id",
        ["obs-first-1", "obs-denied-1", "obs-deleted-1"])
    audited = {row["request_id"]: row for row in rows}
    assert set(audited) == {"obs-denied-1", "obs-deleted-1"}  # successes are not audited
    row = audited["obs-denied-1"]
    assert (row["action"], row["actor"], row["key_id"], row["user_id"], row["ip"]) == (
        "request.denied", "gateway", first.key_id, first.user_id, "127.0.0.1")
    assert json.loads(row["detail"])["code"] == "MISSING_PERMISSION"
    assert json.loads(audited["obs-deleted-1"]["detail"])["code"] == "INVALID_APIKEY"
    assert audited["obs-deleted-1"]["key_id"] == first.key_id

    # `gateway support REQUEST_ID` finds the access-log line and the audit rows.
    log_file = Path(settings.data_dir).parent / "access.log"
    log_file.write_text(output)
    code, out = await run_cli(settings, "support", "obs-denied-1", "--log", str(log_file))
    assert code == 0, out
    assert "MISSING_PERMISSION" in out and "request.denied" in out
    assert f"key {first.key_id}: deleted" in out
    code, out = await run_cli(settings, "support", "no-such-request", "--log", str(log_file))
    assert code == 1, out


async def test_metrics_are_summed_over_workers(
    observed_settings: Settings, processes: list[GatewayProcess],
) -> None:
    gw = GatewayProcess(observed_settings.replace(rate_limits=False), workers=2)
    processes.append(gw)
    async with aiohttp.ClientSession() as http:
        for _ in range(20):
            # A new connection each time, so both workers get some of them.
            async with http.get(gw.url + "/public/v1/time",
                                headers={"Connection": "close"}) as resp:
                assert resp.status == 200
        text = await wait_for_metric(http, gw.status_port, "keygate_requests_total", 20,
                                     route="/public/v1/time")
    assert samples(text, "keygate_requests_total", route="/public/v1/time", status="200") == 20
    assert samples(text, "keygate_request_seconds_count", route="/public/v1/time") == 20


async def test_text_access_log_in_dev(
    observed_settings: Settings, processes: list[GatewayProcess],
) -> None:
    gw = GatewayProcess(observed_settings, extra_env={"GATEWAY_LOG_FORMAT": "text"})
    processes.append(gw)
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/public/v1/time",
                            headers={"X-Request-Id": "plain-text-1"}) as resp:
            assert resp.status == 200
    output = gw.stop()
    line = next(line for line in output.splitlines() if "id=plain-text-1" in line)
    assert '"GET /public/v1/time" 200' in line
    assert not access_lines(output)
