"""The usage chart's geometry: one bar per hour, stacked by outcome, scaled to a round peak."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from admin_ui.db import UsageRow
from admin_ui.usage_chart import HOURS, build_usage_chart

NOW = datetime(2030, 1, 8, 12, 34, tzinfo=UTC)
THIS_HOUR = NOW.replace(minute=0)


def test_an_empty_week_has_every_hour_and_nothing_to_table() -> None:
    chart = build_usage_chart([], NOW)
    assert len(chart.bars) == HOURS
    assert chart.bars[-1].start == THIS_HOUR
    assert chart.bars[0].start == THIS_HOUR - timedelta(hours=HOURS - 1)
    assert chart.totals == {} and chart.busy == () and chart.peak == 0


def test_bars_stack_by_outcome_and_scale_to_a_round_peak() -> None:
    rows = [UsageRow(THIS_HOUR, "", 30), UsageRow(THIS_HOUR, "RATELIMIT", 10),
            UsageRow(THIS_HOUR - timedelta(hours=2), "", 5),
            UsageRow(THIS_HOUR - timedelta(days=8), "", 999)]  # outside the week: left out
    chart = build_usage_chart(rows, NOW)
    assert chart.codes == ("", "RATELIMIT")
    assert chart.totals == {"": 35, "RATELIMIT": 10}
    assert chart.peak == 40 and chart.ticks[-1][1] == 50
    last = chart.bars[-1]
    assert last.total == 40 and [s.code for s in last.segments] == ["", "RATELIMIT"]
    through, limited = last.segments
    assert through.y + through.height == chart.base  # stacked from the zero line up
    assert abs(limited.y + limited.height - through.y) < 0.01
    assert abs(through.height / limited.height - 3) < 0.01
    assert [bar.start for bar in chart.busy] == [THIS_HOUR, THIS_HOUR - timedelta(hours=2)]
    assert chart.colours[""] != chart.colours["RATELIMIT"]
    midnight = [label for _, label in chart.days]
    assert len(midnight) == 7 and midnight[-1] == "Tue 08 Jan"
