"""The record of each request: one access-log line, and an audit row for denials worth a look.

The access log is one line per request on standard output: JSON in production
(`log_format: json`), plain text in dev. It names the key by its public id, never its
secret. Lines are formatted and written a batch of requests at a time (`Outcomes` hands
them over): in one tight loop a line costs a fraction of what it costs alone between two
requests, and one write serves the whole batch.

Denials worth investigating (a key used from an address its allowlist refuses, a key
lacking a permission, a well-formed token that fails, a blocked client address) are also
written to the PostgreSQL audit log, in batches off the hot path, at most `max_batch` rows
per flush (every `flush_interval` seconds; a flood of bad tokens must not become a flood of
writes). Rows older than `audit_retention` are deleted about once an hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from typing import TextIO

import asyncpg

from gateway.config.settings import Settings
from gateway.observability.outcomes import Outcome
from gateway.store.errors import POSTGRES_ERRORS
from gateway.tasks import every, stop_task

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
_q = json.encoder.encode_basestring_ascii  # a str as a JSON string literal, quotes included
# Durations in ms with 3 decimals from integer microseconds: a list lookup for the decimals
# instead of formatting a float (twice per line).
_FRACTIONS = tuple(f".{n:03d}" for n in range(1000))
_FRAGMENTS_KEPT = 1024
_KEYS_KEPT = 4096  # a key's id and account, as JSON fields

_AuditRow = tuple[int | None, str | None, str, str, str]


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
        self.dropped = 0  # denials not audited because a batch was full
        self._ms = self._second = -1
        self._fragments: dict[tuple[str, str | None, int, str], str] = {}
        self._keys: dict[str, str] = {}  # key id -> its key_id and account_id fields
        self._date = self._stamp = ""
        self._task: asyncio.Task[None] | None = None
        self._pruned_at = 0.0

    # --- per batch of requests (`Outcomes`' reader) -----------------------------------------

    def write(self, outcomes: list[Outcome]) -> None:
        """Log a batch of answered requests; keep the audit rows of the denials among them."""
        if self._pool is not None:
            for outcome in outcomes:
                if outcome.code in AUDITED_CODES:
                    self._audit(outcome)
        if not self.is_enabled:
            return
        # One write a batch: stdout is often unbuffered (PYTHONUNBUFFERED in containers), and
        # a system call per request is not free.
        lines = self._json_lines(outcomes) if self.is_json else map(self._text_line, outcomes)
        with contextlib.suppress(OSError, ValueError):
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()

    def _json_lines(self, outcomes: list[Outcome]) -> list[str]:
        # One loop over the batch, what every line reads held in locals (no method call and
        # attribute loads per line: 7% of a line). One f-string rather than json.dumps of a
        # dict: a third of the cost. Every string that can carry client bytes is escaped; the
        # request id (`request_id_of`), the address, key id and code cannot need it.
        fragments, keys, fractions = self._fragments, self._keys, _FRACTIONS
        ms, stamp = self._ms, self._stamp
        lines: list[str] = []
        append = lines.append
        for outcome in outcomes:
            at_ms, path, route, key_id = outcome.at_ms, outcome.path, outcome.route, outcome.key_id
            method, status, code = outcome.method, outcome.status, outcome.code
            account, micros, upstream = outcome.account_id, outcome.micros, outcome.upstream_micros
            if at_ms != ms:  # requests answered in the same millisecond share one stamp
                ms, stamp = at_ms, self._new_stamp(at_ms)
            fragment = (fragments.get((method, route, status, code))
                        or self._fragment(method, route, status, code))
            if route is None:
                # Only a matched path is known to be normalised, and so plain RFC 3986
                # characters (`normalise_path`); others may be anything the client sent.
                path = _q(path)[1:-1]
            if key_id is None:
                key = '"key_id":null,"account_id":null'
            elif account is None:  # the id a refused client claimed
                key = f'"key_id":"{key_id}","account_id":null'
            else:  # a key that was found: its two fields, made once
                key = keys.get(key_id) or self._key_fields(key_id, account)
            upstream_ms = ("null" if upstream is None
                           else f"{upstream // 1000}{fractions[upstream % 1000]}")
            append(f'{{"ts":"{stamp}","request_id":"{outcome.request_id}",'
                   f'"client_ip":"{outcome.client_ip}",'
                   f'{fragment},"path":"{path}",{key},'
                   f'"duration_ms":{micros // 1000}{fractions[micros % 1000]},'
                   f'"upstream_ms":{upstream_ms}}}')
        return lines

    def _text_line(self, outcome: Outcome) -> str:
        if outcome.at_ms != self._ms:
            self._new_stamp(outcome.at_ms)
        upstream, account = outcome.upstream_micros, outcome.account_id
        up = "-" if upstream is None else f"{upstream / 1000:.1f}ms"
        return (f"{self._stamp} {outcome.client_ip} \"{outcome.method} {outcome.path}\" "
                f"{outcome.status} {outcome.code or '-'} {outcome.micros / 1000:.1f}ms "
                f"upstream={up} id={outcome.request_id} key={outcome.key_id or '-'} "
                f"account={account if account is not None else '-'}")

    def _key_fields(self, key_id: str, account: int) -> str:
        if len(self._keys) >= _KEYS_KEPT:
            self._keys.clear()
        fields = self._keys[key_id] = f'"key_id":"{key_id}","account_id":{account}'
        return fields

    def _fragment(self, method: str, route: str | None, status: int, code: str) -> str:
        """The JSON fields a request shares with many others: made once, then looked up."""
        if len(self._fragments) >= _FRAGMENTS_KEPT:
            self._fragments.clear()  # odd methods or statuses must not grow it without end
        error = f'"{code}"' if code else "null"
        fragment = self._fragments[(method, route, status, code)] = (
            f'"method":{_q(method)},"route":{"null" if route is None else _q(route)},'
            f'"status":{status},"error":{error}')
        return fragment

    def _new_stamp(self, at_ms: int) -> str:
        self._ms = at_ms
        second, milli = divmod(at_ms, 1000)
        if second != self._second:  # strftime once a second
            self._second = second
            self._date = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        self._stamp = f"{self._date}.{milli:03d}Z"
        return self._stamp

    def _audit(self, outcome: Outcome) -> None:
        if len(self._pending) >= self._max_batch:
            self.dropped += 1
            return
        detail = {"code": outcome.code, "status": outcome.status, "method": outcome.method,
                  "path": outcome.path, "route": outcome.route}
        self._pending.append((outcome.account_id, outcome.key_id, outcome.client_ip,
                              outcome.request_id, json.dumps(detail)))

    # --- background ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = every(self._flush_interval, self.flush, "audit-flush")

    async def flush(self) -> None:
        """Write pending audit rows; prune old ones now and then."""
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
        except POSTGRES_ERRORS as exc:
            log.warning("audit log write failed, %d denial row(s) lost: %r", len(rows), exc)
        if self.dropped:
            log.warning("audit log: %d denial row(s) not written (more than %d a flush)",
                        self.dropped, self._max_batch)
            self.dropped = 0

    async def aclose(self) -> None:
        await stop_task(self._task)
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
