"""Key usage, counted off the hot path from the batches of answered requests (`Outcomes`):

* `last used` (time and client IP) of each key, one UPDATE per interval;
* requests per key, hour and outcome ('' when the key was let through, else the gateway's
  error code), one upsert per interval, kept for `retention` and then pruned.

Only requests whose key was proven (its secret checked) count: a client that merely claims
a key id must not fill another account's usage or the table.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter

import asyncpg

from gateway.observability.outcomes import Outcome
from gateway.store.errors import POSTGRES_ERRORS
from gateway.tasks import every, stop_task

__all__ = ["UsageRecorder"]

log = logging.getLogger(__name__)

_HOUR_MS = 3_600_000
_PRUNE_INTERVAL = 3600.0

_LAST_USED = """
UPDATE api_keys k SET last_used_at = to_timestamp(u.at), last_used_ip = u.ip::inet
FROM unnest($1::text[], $2::float8[], $3::text[]) AS u(key_id, at, ip)
WHERE k.key_id = u.key_id AND (k.last_used_at IS NULL OR k.last_used_at < to_timestamp(u.at))
"""
_COUNTS = """
INSERT INTO key_usage_hourly (key_id, hour, code, requests)
SELECT u.key_id, to_timestamp(u.hour), u.code, u.n
FROM unnest($1::text[], $2::float8[], $3::text[], $4::bigint[]) AS u(key_id, hour, code, n)
ON CONFLICT (key_id, hour, code)
DO UPDATE SET requests = key_usage_hourly.requests + EXCLUDED.requests
"""
_PRUNE = "DELETE FROM key_usage_hourly WHERE hour < now() - make_interval(secs => $1)"


class UsageRecorder:
    """An `Outcomes` reader (`read`), flushed every `interval` seconds and at shutdown."""

    def __init__(self, pool: asyncpg.Pool, interval: float, retention: float) -> None:
        self._pool = pool
        self._interval = interval
        self._retention = retention
        self._last: dict[str, tuple[int, str]] = {}  # key id -> (at_ms, client IP)
        self._counts: Counter[tuple[str, int, str]] = Counter()  # (key id, hour, code)
        self._task: asyncio.Task[None] | None = None
        self._pruned_at: float | None = None  # monotonic

    def read(self, outcomes: list[Outcome]) -> None:
        """Tally a batch of answered requests (called by `Outcomes`, never per request)."""
        last, counts = self._last, self._counts
        for outcome in outcomes:
            if outcome.account_id is None:  # no proven key
                continue
            key_id = outcome.key_id
            assert key_id is not None
            counts[(key_id, outcome.at_ms // _HOUR_MS, outcome.code)] += 1
            if not outcome.code:
                seen = last.get(key_id)
                if seen is None or seen[0] <= outcome.at_ms:
                    last[key_id] = (outcome.at_ms, outcome.client_ip)

    def start(self) -> None:
        self._task = every(self._interval, self.flush, "usage-flush")

    async def flush(self) -> None:
        await self._flush_last_used()
        await self._flush_counts()
        if self._pruned_at is None or time.monotonic() - self._pruned_at >= _PRUNE_INTERVAL:
            await self._prune()

    async def _flush_last_used(self) -> None:
        if not self._last:
            return
        batch, self._last = self._last, {}
        ids = list(batch)
        try:
            await self._pool.execute(
                _LAST_USED, ids, [batch[k][0] / 1000 for k in ids],
                [_address(batch[k][1]) for k in ids])
        except POSTGRES_ERRORS as exc:
            log.warning("could not record last use of %d key(s): %r", len(batch), exc)
            for key_id, seen in batch.items():  # keep the newer of the two
                if key_id not in self._last or self._last[key_id][0] < seen[0]:
                    self._last[key_id] = seen

    async def _flush_counts(self) -> None:
        if not self._counts:
            return
        batch, self._counts = self._counts, Counter()
        rows = list(batch.items())
        try:
            await self._pool.execute(
                _COUNTS, [k for (k, _, _), _ in rows], [h * 3600.0 for (_, h, _), _ in rows],
                [c for (_, _, c), _ in rows], [n for _, n in rows])
        except POSTGRES_ERRORS as exc:
            log.warning("could not record usage of %d key-hour(s): %r", len(rows), exc)
            self._counts.update(batch)

    async def _prune(self) -> None:
        try:
            await self._pool.execute(_PRUNE, self._retention)
        except POSTGRES_ERRORS as exc:
            log.warning("could not prune old usage counts: %r", exc)
            return
        self._pruned_at = time.monotonic()

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None
        await self.flush()


def _address(text: str) -> str | None:
    """The client IP as PostgreSQL's inet takes it (None if, unexpectedly, it is not one)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
