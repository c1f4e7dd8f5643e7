"""The revocation run: how long a deleted key keeps working somewhere in the cluster.

Three `gateway serve` processes share one Redis (a private one, so the run can kill it) and
the database. For each deletion: a new key is made and used once at every gateway (so each
has it in its process cache), pollers start asking each gateway with it every few ms, the
key is deleted with `gateway.lifecycle.delete_key` (as the admin UI and `gateway keys
delete` do), and the time from the call to the last gateway's first 401 is recorded.
The clock starts before the deleting transaction commits, so the figures are upper bounds
(by the commit's own time, about a millisecond).

With Redis up, the invalidation arrives by pub/sub (or PostgreSQL NOTIFY, whichever is
first); with Redis down (killed), only NOTIFY is left.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg

from bench.gateways import PRIVATE_PATH, GatewayProcess, Secrets, new_key, new_user
from bench.load import percentile
from bench.services import PrivateRedis
from gateway.keys.lifecycle import delete_key
from gateway.store.redis import RedisKeyCache, connect_redis

__all__ = ["run_revocation"]

_POLL_INTERVAL = 0.002
_GIVE_UP = 10.0
_GATEWAYS = 3


async def _refused_after(session: aiohttp.ClientSession, url: str, token: str,
                         started: list[float], stop: asyncio.Event) -> float | None:
    """Poll until the gateway answers 401; seconds from `started[0]` to that answer."""
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        async with session.get(url, headers=headers) as answer:
            await answer.read()
            if answer.status == 401:
                return time.perf_counter() - started[0] if started else None
            if answer.status != 200:
                raise RuntimeError(f"{url} answered {answer.status} while polling")
        await asyncio.sleep(_POLL_INTERVAL)
    return None


async def _one_deletion(conn: asyncpg.Connection, cache: RedisKeyCache,
                        sessions: list[aiohttp.ClientSession], urls: list[str], user_id: int,
                        secrets_: Secrets) -> list[float] | None:
    key_id, token = await new_key(conn, user_id, secrets_)
    for session, url in zip(sessions, urls, strict=True):
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as answer:
            await answer.read()
            if answer.status != 200:
                raise RuntimeError(f"a fresh key got {answer.status} from {url}")
    started: list[float] = []
    stop = asyncio.Event()
    pollers = [asyncio.create_task(_refused_after(session, url, token, started, stop))
               for session, url in zip(sessions, urls, strict=True)]
    await asyncio.sleep(_POLL_INTERVAL * 2)  # the pollers are asking by now
    started.append(time.perf_counter())
    await delete_key(conn, key_id, actor="bench", cache=cache)
    done, pending = await asyncio.wait(pollers, timeout=_GIVE_UP)
    stop.set()
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if pending:
        return None
    times = [task.result() for task in done]
    return None if any(t is None for t in times) else [t for t in times if t is not None]


async def _phase(name: str, deletions: int, database_url: str, redis_url: str, prefix: str,
                 urls: list[str], secrets_: Secrets, say: Callable[[str], None]
                 ) -> dict[str, object]:
    conn = await asyncpg.connect(database_url)
    client = connect_redis(redis_url, 1.0)
    cache = RedisKeyCache(client, prefix, 60, 5, 3600, mac_keys=())  # tombstones only
    connector = aiohttp.TCPConnector(limit=0)
    sessions = [aiohttp.ClientSession(connector=connector, connector_owner=False)
                for _ in urls]
    last: list[float] = []
    each: list[float] = []
    failed = 0
    try:
        user_id = await new_user(conn)
        for _ in range(deletions):
            times = await _one_deletion(conn, cache, sessions, urls, user_id, secrets_)
            if times is None:
                failed += 1
                continue
            last.append(max(times) * 1000)
            each.extend(t * 1000 for t in times)
    finally:
        for session in sessions:
            await session.close()
        await connector.close()
        await client.aclose()
        await conn.close()
    last.sort()
    each.sort()
    result = {
        "phase": name, "deletions": deletions, "not_refused_within_s": failed,
        "p50_ms": round(percentile(last, 50), 2), "p99_ms": round(percentile(last, 99), 2),
        "max_ms": round(last[-1], 2) if last else None,
        "per_gateway_p50_ms": round(percentile(each, 50), 2),
    }
    say(f"  {name:<10} every gateway refuses after: p50 {result['p50_ms']} ms  "
        f"p99 {result['p99_ms']} ms  max {result['max_ms']} ms"
        + (f"  ({failed} not refused within {_GIVE_UP:.0f} s)" if failed else ""))
    return result


def run_revocation(workdir: Path, database_url: str, upstream_url: str, secrets_: Secrets, *,
                   deletions: int, say: Callable[[str], None]) -> dict[str, object]:
    say(f"revocation: {_GATEWAYS} gateways, {deletions} deletions with Redis up, "
        f"then {deletions} with Redis down")
    redis = PrivateRedis()
    redis.start()
    prefix = f"kgbench:{secrets.token_hex(6)}:"
    gateways: list[GatewayProcess] = []
    try:
        for i in range(_GATEWAYS):
            gateways.append(GatewayProcess(
                f"revocation-{i}", workdir, database_url=database_url, redis_url=redis.url,
                upstream_url=upstream_url, secrets_=secrets_, redis_prefix=prefix))
        urls = [g.url + PRIVATE_PATH for g in gateways]
        up = asyncio.run(_phase("redis up", deletions, database_url, redis.url, prefix, urls,
                                secrets_, say))
        redis.stop()
        time.sleep(2.0)  # every gateway has noticed (its invalidation channel retries)
        down = asyncio.run(_phase("redis down", deletions, database_url, redis.url, prefix,
                                  urls, secrets_, say))
    finally:
        for gateway in gateways:
            gateway.stop()
        redis.stop()
        shutil.rmtree(redis.folder, ignore_errors=True)
    return {"gateways": _GATEWAYS, "poll_interval_ms": _POLL_INTERVAL * 1000,
            "redis_up": up, "redis_down": down}
