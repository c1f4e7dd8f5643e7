"""Readiness: can this process check keys and reach the upstream right now?"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis

__all__ = ["check_readiness", "tcp_reachable"]


async def tcp_reachable(url: str, timeout: float = 1.0) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, port), timeout)
    except (TimeoutError, OSError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def check_readiness(pool: asyncpg.Pool, client: aioredis.Redis, upstreams: Sequence[str],
                          timeout: float = 1.0) -> dict[str, bool]:
    """One boolean per dependency. Redis is not required: the gateway degrades without it."""

    async def postgres() -> bool:
        try:
            await pool.fetchval("SELECT 1", timeout=timeout)
        except Exception:
            return False
        return True

    async def redis() -> bool:
        try:
            return bool(await asyncio.wait_for(client.ping(), timeout))
        except Exception:
            return False

    results = await asyncio.gather(
        postgres(), redis(), *(tcp_reachable(u, timeout) for u in upstreams))
    checks = {"postgres": results[0], "redis_optional": results[1]}
    checks["upstream"] = all(results[2:])
    return checks
