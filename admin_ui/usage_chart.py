"""A key's usage per hour as a small chart: pure geometry for the server-rendered SVG.

No I/O and no JavaScript: the template draws the rectangles computed here, and the same
numbers go into a table beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from admin_ui.db import UsageRow

__all__ = ["HOURS", "LET_THROUGH", "Bar", "Segment", "UsageChart", "build_usage_chart"]

HOURS = 7 * 24
LET_THROUGH = ""  # the outcome code of requests that were let through
_BAR = 4  # width of one hour, in SVG units
_LEFT, _TOP, _BOTTOM, _HEIGHT = 44, 8, 22, 140
# One colour per outcome, colour-blind safe (Okabe-Ito); the rest share the last.
_COLOURS = ("#0072B2", "#D55E00", "#E69F00", "#CC79A7", "#009E73", "#56B4E9", "#777777")


@dataclass(frozen=True, slots=True)
class Segment:
    code: str
    requests: int
    y: float
    height: float
    colour: str


@dataclass(frozen=True, slots=True)
class Bar:
    start: datetime
    x: float
    total: int
    segments: tuple[Segment, ...]
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class UsageChart:
    bars: tuple[Bar, ...]  # one per hour, oldest first
    codes: tuple[str, ...]  # outcomes seen: '' (let through) first, then refusals by code
    colours: dict[str, str]
    totals: dict[str, int]
    peak: int
    ticks: tuple[tuple[float, int], ...]  # (y, requests) of the horizontal guides
    days: tuple[tuple[float, str], ...]  # (x, label) where each day starts
    width: int
    height: int
    left: int
    top: int
    base: int  # y of the zero line

    @property
    def busy(self) -> tuple[Bar, ...]:
        """The hours with requests, newest first: the table's rows."""
        return tuple(bar for bar in reversed(self.bars) if bar.total)


def _ceiling(peak: int) -> int:
    """A round number at or above `peak` for the axis (1, 2, 5 times a power of ten)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= peak:
                return step * factor
        step *= 10


def build_usage_chart(rows: Sequence[UsageRow], now: datetime, hours: int = HOURS) -> UsageChart:
    """The chart of the `hours` hours up to `now` (its own hour last), from stored counts."""
    last = now.replace(minute=0, second=0, microsecond=0)
    starts = [last - timedelta(hours=hours - 1 - i) for i in range(hours)]
    counts: dict[datetime, dict[str, int]] = {start: {} for start in starts}
    for row in rows:
        hour = row.hour.replace(minute=0, second=0, microsecond=0)
        if hour in counts:
            counts[hour][row.code] = counts[hour].get(row.code, 0) + row.requests
    totals: dict[str, int] = {}
    for by_code in counts.values():
        for code, n in by_code.items():
            totals[code] = totals.get(code, 0) + n
    codes = tuple(sorted(totals, key=lambda c: (c != LET_THROUGH, -totals[c], c)))
    colours = {code: _COLOURS[min(i, len(_COLOURS) - 1)] for i, code in enumerate(codes)}
    peak = max((sum(by_code.values()) for by_code in counts.values()), default=0)
    ceiling = _ceiling(max(peak, 1))
    base = _TOP + _HEIGHT
    scale = _HEIGHT / ceiling
    bars: list[Bar] = []
    for i, start in enumerate(starts):
        by_code = counts[start]
        y = float(base)
        segments: list[Segment] = []
        for code in codes:
            n = by_code.get(code, 0)
            if n:
                height = n * scale
                y -= height
                segments.append(Segment(code, n, round(y, 2), round(height, 2), colours[code]))
        bars.append(Bar(start, _LEFT + i * _BAR, sum(by_code.values()), tuple(segments),
                        dict(by_code)))
    ticks = tuple((round(base - f * _HEIGHT, 2), round(ceiling * f)) for f in (0, 0.5, 1))
    days = tuple((float(_LEFT + i * _BAR), start.strftime("%a %d %b"))
                 for i, start in enumerate(starts) if start.hour == 0)
    return UsageChart(tuple(bars), codes, colours, totals, peak, ticks, days,
                      _LEFT + hours * _BAR + 4, base + _BOTTOM, _LEFT, _TOP, base)
