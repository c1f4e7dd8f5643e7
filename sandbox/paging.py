"""History queries: the ``from``/``to`` window, ``max_page_size`` and the opaque ``cursor``."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from .clock import parse_iso
from .errors import SandboxError

__all__ = ["MAX_PAGE_SIZE", "HistoryQuery", "flag"]

MAX_PAGE_SIZE = 100
MAX_RANGE = timedelta(days=100)

_T = TypeVar("_T")


def flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "").lower() in ("true", "1")


def _time(query: Mapping[str, str], name: str, invalid: str) -> datetime:
    parsed = parse_iso(query[name])
    if parsed is None:
        raise SandboxError(400, invalid)
    return parsed


def _decode_cursor(cursor: str) -> int:
    try:
        offset = int(base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii"))
    except (ValueError, UnicodeError, binascii.Error):
        raise SandboxError(400, "INVALID_PAGE_CURSOR") from None
    if offset < 0:
        raise SandboxError(400, "INVALID_PAGE_CURSOR")
    return offset


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    start: datetime | None
    end: datetime | None
    max_page_size: int
    offset: int

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> HistoryQuery:
        # The exchange wants both ends of a window or neither.
        if "from" in query and "to" not in query:
            raise SandboxError(400, "MISSING_TO_PARAM")
        if "to" in query and "from" not in query:
            raise SandboxError(400, "MISSING_FROM_PARAM")
        start = end = None
        if "from" in query:
            start = _time(query, "from", "INVALID_ACCOUNT_HISTORY_FROM_TIME")
            end = _time(query, "to", "INVALID_ACCOUNT_HISTORY_TO_TIME")
            if start > end:
                raise SandboxError(400, "INVALID_ACCOUNT_HISTORY_TIME_PERIOD")
            if end - start > MAX_RANGE:
                raise SandboxError(400, "ACCOUNT_HISTORY_TIME_RANGE_TOO_BIG")
        try:
            size = int(query.get("max_page_size", MAX_PAGE_SIZE))
        except ValueError:
            size = 0
        if not 0 < size <= MAX_PAGE_SIZE:
            raise SandboxError(400, "INVALID_ACCOUNT_HISTORY_MAX_PAGE_SIZE")
        cursor = query.get("cursor")
        return cls(start, end, size, _decode_cursor(cursor) if cursor else 0)

    def covers(self, moment: datetime) -> bool:
        if self.start is None or self.end is None:
            return True
        return self.start <= moment <= self.end

    def page(
        self, key: str, items: Sequence[_T], render: Callable[[_T], object]
    ) -> dict[str, object]:
        """One page of `items` (already filtered, newest first) under `key`."""
        stop = self.offset + self.max_page_size
        body: dict[str, object] = {
            key: [render(item) for item in items[self.offset : stop]],
            "max_page_size": self.max_page_size,
        }
        if stop < len(items):
            body["cursor"] = base64.urlsafe_b64encode(str(stop).encode("ascii")).decode("ascii")
        return body
