"""`gateway support REQUEST_ID`: everything known about one request, for ops.

The request id is in every answer (`X-Request-Id`), so a client's complaint names it. This
gathers the access-log lines that mention it (from log files ops pass, e.g. the output of
`kubectl logs` or `docker compose logs`), the audit rows written for it, and the state of
the key it used.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import asyncpg

__all__ = ["LogHit", "SupportReport", "find_log_lines", "gather", "print_report"]


@dataclass(frozen=True, slots=True)
class LogHit:
    source: str
    line_number: int
    line: str


@dataclass(slots=True)
class SupportReport:
    request_id: str
    log_hits: list[LogHit]
    audit_rows: list[asyncpg.Record]
    keys: list[asyncpg.Record]

    @property
    def is_found(self) -> bool:
        return bool(self.log_hits or self.audit_rows)


def find_log_lines(sources: Iterable[str], request_id: str) -> Iterator[LogHit]:
    """Lines of the given files (`-` is standard input) that mention `request_id`."""
    # A whole token: `abc` must not find `abcd` (ids are [A-Za-z0-9._-]).
    pattern = re.compile(r"(?<![A-Za-z0-9._-])" + re.escape(request_id) + r"(?![A-Za-z0-9._-])")
    for source in sources:
        stream: TextIO
        stream = (sys.stdin if source == "-"
                  else Path(source).open(encoding="utf-8", errors="replace"))
        try:
            for number, line in enumerate(stream, 1):
                if request_id in line and pattern.search(line):
                    yield LogHit(source, number, line.rstrip("\n"))
        finally:
            if stream is not sys.stdin:
                stream.close()


def _key_ids(hits: Iterable[LogHit], rows: Iterable[asyncpg.Record]) -> list[str]:
    found: list[str] = []
    for hit in hits:
        key_id: object = None
        if hit.line.startswith("{"):
            try:
                key_id = json.loads(hit.line).get("key_id")
            except (ValueError, AttributeError):
                key_id = None
        else:
            match = re.search(r"\bkey=([A-Za-z0-9_-]+)", hit.line)
            key_id = match.group(1) if match and match.group(1) != "-" else None
        if isinstance(key_id, str):
            found.append(key_id)
    found.extend(row["key_id"] for row in rows if row["key_id"])
    return list(dict.fromkeys(found))


async def gather(conn: asyncpg.Connection, request_id: str,
                 log_sources: Iterable[str]) -> SupportReport:
    """Look everywhere for `request_id`."""
    hits = list(find_log_lines(log_sources, request_id))
    rows = await conn.fetch(
        "SELECT at, actor, action, key_id, user_id, host(client_ip) AS client_ip, detail"
        " FROM audit_log WHERE request_id = $1 ORDER BY at, id", request_id)
    keys = await conn.fetch(
        "SELECT k.key_id, k.status::text AS status, k.name, k.permissions, k.user_id,"
        " u.email, k.created_at, k.deleted_at FROM api_keys k JOIN users u ON u.id = k.user_id"
        " WHERE k.key_id = ANY($1::text[]) ORDER BY k.key_id", _key_ids(hits, rows))
    return SupportReport(request_id, hits, list(rows), list(keys))


def print_report(report: SupportReport, sources: list[str], out: TextIO) -> None:
    print(f"request {report.request_id}", file=out)
    if sources:
        print(f"access log ({len(report.log_hits)} line(s) in {', '.join(sources)}):", file=out)
        for hit in report.log_hits:
            print(f"  {hit.source}:{hit.line_number}: {hit.line}", file=out)
    else:
        print("access log: not searched (pass --log FILE, or --log - for standard input)",
              file=out)
    print(f"audit log ({len(report.audit_rows)} row(s)):", file=out)
    for row in report.audit_rows:
        print(f"  {row['at'].isoformat()} {row['action']} actor={row['actor']} "
              f"key={row['key_id'] or '-'} user={row['user_id'] or '-'} "
              f"ip={row['client_ip'] or '-'} {row['detail']}", file=out)
    for key in report.keys:
        deleted = f", deleted {key['deleted_at'].isoformat()}" if key["deleted_at"] else ""
        print(f"key {key['key_id']}: {key['status']}{deleted}; '{key['name']}' of user "
              f"{key['user_id']} <{key['email']}>, permissions {','.join(key['permissions'])}",
              file=out)
