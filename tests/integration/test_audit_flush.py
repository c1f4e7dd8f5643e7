"""Needs: PostgreSQL (tests/conftest.py).

Audit rows of denied requests survive a shutdown that interrupts their write.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import secrets
import time

import asyncpg
from aiohttp.test_utils import make_mocked_request

from gateway.config.settings import Settings
from gateway.observability.accesslog import AccessLog
from gateway.observability.outcomes import Outcomes
from gateway.pipeline.context import RequestContext


async def test_rows_of_a_write_cancelled_at_shutdown_are_written_by_the_last_flush(
        settings: Settings, db: asyncpg.Pool) -> None:
    log = AccessLog(settings, db, io.StringIO())
    request_id = f"audit-{secrets.token_hex(6)}"
    request = make_mocked_request("GET", "/public/v1/account/balances")
    ctx = RequestContext(request, request_id, request.path, ipaddress.ip_address("203.0.113.7"),
                         "203.0.113.7", services=None)  # type: ignore[arg-type]
    outcomes = Outcomes([log.write])
    outcomes.add(ctx, request, request_id, 401, "INVALID_APIKEY", time.perf_counter_ns())
    outcomes.drain()
    async with db.acquire() as blocker, blocker.transaction():
        # The insert waits behind this lock, so the flush is cancelled in the middle of it.
        await blocker.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        writing = asyncio.create_task(log.flush())
        await asyncio.sleep(0.3)
        assert not writing.done()
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writing
    await log.aclose()  # the shutdown's last flush, the lock gone
    rows = await db.fetch("SELECT action, host(client_ip) AS ip FROM audit_log"
                          " WHERE request_id = $1", request_id)
    assert [(r["action"], r["ip"]) for r in rows] == [("request.denied", "203.0.113.7")]
