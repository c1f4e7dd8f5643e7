"""The record of each request: one access-log line, and an audit row for denials worth a look.

The access log is one line per request on standard output: JSON in production
(`log_format: json`), plain text in dev. It names the key by its public id, never its
secret. A request only leaves its facts in a list; they are formatted into lines 64 at a
time (in one tight loop a line costs a fraction of what it costs alone between two requests)
and written every `flush_interval` seconds and at shutdown.

Denials worth investigating (a key used from an address its allowlist refuses, a key
lacking a permission, a well-formed token that fails, a blocked client address) are also
written to the PostgreSQL audit log, in batches off the hot path, at most `max_batch` rows
per flush (a flood of bad tokens must not become a flood of writes). Rows older than
`audit_retention` are deleted about once an hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, TextIO

import asyncpg
from aiohttp import web

from gateway.client_ip import ip_text
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.context import RequestContext

__all__ = ["AUDITED_CODES", "AccessLog", "JsonFormatter", "configure_logging"]

log = logging.getLogger(__name__)

# Denials worth an audit row. Not MISSING_CREDENTIALS, ROUTE_NOT_FOUND or RATELIMIT: they are
# the background noise of an internet-facing API, and the access log has them anyway.
AUDITED_CODES = frozenset({
    "INVALID_APIKEY", "INVALID_IP_RESTRICTION", "MISSING_PERMISSION", "CLIENT_IP_BLOCKED",
})
_AUDIT_INSERT = (
    "INSERT INTO audit_log (user_id, actor, action, key_id, client_ip, request_id, detail)"
    " VALUES ($1, 'gateway', 'request.denied', $2, $3::inet, $4, $5::jsonb)"
)
_PRUNE_EVERY = 3600.0
# Lines are formatted this many at a time: most of the saving of a batch, and a pause of
# about a tenth of a millisecond, so the event loop's other requests hardly notice.
_FORMAT_BATCH = 64
_q = json.encoder.encode_basestring_ascii  # a str as a JSON string literal, quotes included
# Durations in ms with 3 decimals from integer microseconds: a list lookup for the decimals
# instead of formatting a float (twice per line).
_FRACTIONS = tuple(f".{n:03d}" for n in range(1000))
_OUTCOMES_KEPT = 1024

_AuditRow = tuple[int | None, str | None, str, str, str]
# at, request id, client ip, method, path, route, status, code, key id, account, seconds,
# upstream seconds
_Entry = tuple[float, str, str, str, str, str | None, int, str, str | None, int | None, float,
               float | None]


class AccessLog:
    """Writes access-log lines and batches the audit rows of denied requests."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool | None,
                 stream: TextIO | None = None, *, flush_interval: float = 0.5,
                 max_batch: int = 500) -> None:
        self.is_enabled = settings.access_log
        self.is_json = settings.log_format == "json"
        self._stream = stream if stream is not None else sys.stdout
        self._pool = pool
        self._retention = settings.audit_retention
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._pending: list[_AuditRow] = []
        # Requests' facts wait here until a batch is formatted; the lines then wait for one
        # write per flush: stdout is often unbuffered (PYTHONUNBUFFERED in containers), and
        # a syscall per request is not free.
        self._entries: list[_Entry] = []
        self._lines: list[str] = []
        self.dropped = 0  # denials not audited because a batch was full
        self._ms = self._second = -1
        self._outcomes: dict[tuple[str, str | None, int, str], str] = {}
        self._date = self._stamp = ""
        self._task: asyncio.Task[None] | None = None
        self._pruned_at = 0.0

    # --- per request (hot path) ----------------------------------------------------------

    def record(self, ctx: RequestContext | None, request: web.BaseRequest, request_id: str,
               status: int, code: str, seconds: float) -> None:
        """One answered request."""
        key_id: str | None = None
        account: int | None = None
        route: str | None = None
        client_ip: str | None = None
        upstream: float | None = None
        if ctx is not None:
            path = ctx.path  # as matched and forwarded
            client_ip = ip_text(ctx.client_ip)
            upstream = ctx.upstream_time
            if ctx.route is not None:
                route = ctx.route.pattern
            if ctx.key is not None:
                key_id, account = ctx.key.key_id, ctx.key.account_id
            elif ctx.token is not None:
                key_id = ctx.token.key_id  # the id the client claimed: public, useful to ops
            if code in AUDITED_CODES and self._pool is not None:
                self._audit(account, key_id, client_ip, request_id,
                            {"code": code, "status": status, "method": request.method,
                             "path": path, "route": route})
        else:  # refused before its path could be read: as it came, without the query
            path = request.raw_path.partition("?")[0]
            client_ip = request.remote or "-"
        if not self.is_enabled:
            return
        # Only the facts here: formatted in a batch with others, in a tight loop, a line costs
        # a fraction of formatting it alone between two requests.
        entries = self._entries
        entries.append((time.time(), request_id, client_ip, request.method, path, route,
                        status, code, key_id, account, seconds, upstream))
        if len(entries) >= _FORMAT_BATCH:
            self._format()

    def _format(self) -> None:
        entries, self._entries = self._entries, []
        self._lines.extend(map(self._line, entries))

    def _line(self, entry: _Entry) -> str:
        (at, request_id, client_ip, method, path, route, status, code, key_id, account,
         seconds, upstream) = entry
        stamp = self._timestamp(at)
        if self.is_json:
            # One f-string rather than json.dumps of a dict: a third of the cost. Every
            # string that can carry client bytes goes through the JSON string encoder; the
            # request id (`request_id_of`), the address, key id and code cannot need escaping.
            outcome = self._outcomes.get((method, route, status, code))
            if outcome is None:
                outcome = self._outcome(method, route, status, code)
            key = "null" if key_id is None else f'"{key_id}"'
            ms, us = divmod(round(seconds * 1e6), 1000)
            if upstream is None:
                upstream_ms = "null"
            else:
                up_ms, up_us = divmod(round(upstream * 1e6), 1000)
                upstream_ms = f"{up_ms}{_FRACTIONS[up_us]}"
            return (
                f'{{"ts":"{stamp}","request_id":"{request_id}","client_ip":"{client_ip}",'
                f'{outcome},"path":{_q(path)},"key_id":{key},'
                f'"account_id":{"null" if account is None else account},'
                f'"duration_ms":{ms}{_FRACTIONS[us]},"upstream_ms":{upstream_ms}}}'
            )
        up = "-" if upstream is None else f"{upstream * 1000:.1f}ms"
        return (f"{stamp} {client_ip} \"{method} {path}\" {status} "
                f"{code or '-'} {seconds * 1000:.1f}ms upstream={up} id={request_id} "
                f"key={key_id or '-'} account={account if account is not None else '-'}")

    def _outcome(self, method: str, route: str | None, status: int, code: str) -> str:
        """The JSON fields a request shares with many others: made once, then looked up."""
        if len(self._outcomes) >= _OUTCOMES_KEPT:
            self._outcomes.clear()  # odd methods or statuses must not grow it without end
        error = f'"{code}"' if code else "null"
        outcome = self._outcomes[(method, route, status, code)] = (
            f'"method":{_q(method)},"route":{"null" if route is None else _q(route)},'
            f'"status":{status},"error":{error}')
        return outcome

    def _timestamp(self, at: float) -> str:
        # Formatted once a millisecond (several requests share one), strftime once a second.
        ms = int(at * 1000)
        if ms != self._ms:
            self._ms = ms
            second, milli = divmod(ms, 1000)
            if second != self._second:
                self._second = second
                self._date = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = f"{self._date}.{milli:03d}Z"
        return self._stamp

    def _audit(self, account: int | None, key_id: str | None, client_ip: str,
               request_id: str, detail: dict[str, object]) -> None:
        if len(self._pending) >= self._max_batch:
            self.dropped += 1
            return
        self._pending.append((account, key_id, client_ip, request_id, json.dumps(detail)))

    # --- background ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="access-log")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            await self.flush()

    async def flush(self) -> None:
        """Flush buffered lines; write pending audit rows; prune old ones now and then."""
        self._format()
        if self._lines:
            lines, self._lines = self._lines, []
            with contextlib.suppress(OSError, ValueError):
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()
        if self._pool is None:
            return
        rows, self._pending = self._pending, []
        try:
            if rows:
                # Denials of unknown keys have no owner; the others name the key's account.
                await self._pool.executemany(_AUDIT_INSERT, rows)
                rows = []  # written
            now = time.monotonic()
            if now - self._pruned_at >= _PRUNE_EVERY:
                self._pruned_at = now
                await self._pool.execute(
                    "DELETE FROM audit_log WHERE at < now() - make_interval(secs => $1)",
                    self._retention)
        except asyncio.CancelledError:
            # Stopped mid-write (shutdown): the last flush writes them again. A row the server
            # had already taken is then written twice; an audit log had better repeat than lose.
            self._pending[:0] = rows
            raise
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("audit log write failed, %d denial row(s) lost: %r", len(rows), exc)
        if self.dropped:
            log.warning("audit log: %d denial row(s) not written (more than %d a flush)",
                        self.dropped, self._max_batch)
            self.dropped = 0

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


class JsonFormatter(logging.Formatter):
    """Application log records as one JSON object a line (`log_format: json`)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    """Switch the root logger's handlers to JSON lines when `log_format` is json."""
    if settings.log_format != "json":
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
