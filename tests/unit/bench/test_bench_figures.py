"""The benchmark's arithmetic: paired ratios, argued scaling, busy signs, CPU roles, turns."""

from __future__ import annotations

import math

import pytest

from bench.cpus import CpuPlan
from bench.latency import busy_signs
from bench.load import PeakResult, RateResult, median, merge_rates, percentile
from bench.peak import PeakRun, turned
from bench.report import check_targets, latency_section, peak_section, scaling_section
from bench.scaling import ScalingRun


def _peak(key: str, rps: list[float], cpu_us: list[float]) -> PeakRun:
    run = PeakRun(key, key)
    run.rounds = [PeakResult(r, 1.0, 2.0, int(r * 5), 0) for r in rps]
    run.cpu_us = cpu_us
    return run


def _rate(p50: float, p99: float, rounds_p99: list[float], achieved: float = 1000.0
          ) -> RateResult:
    return RateResult(1000.0, achieved, p50, p50, p99, p99, 5000, 0, [], rounds_p99)


def test_median_and_percentile() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert math.isnan(median([]))
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0


def test_one_stalled_round_does_not_decide_the_merged_p99() -> None:
    def round_(latencies: list[float]) -> RateResult:
        ordered = sorted(latencies)
        return RateResult(1000.0, 1000.0, percentile(ordered, 50), percentile(ordered, 90),
                          percentile(ordered, 99), ordered[-1], len(ordered), 0, ordered)

    calm = [0.3] * 95 + [0.9] * 5
    stalled = [0.3] * 90 + [40.0] * 10
    merged = merge_rates([round_(calm), round_(stalled), round_(calm)])
    assert merged.p99_ms == 0.9
    assert merged.rounds_p99_ms == [0.9, 40.0, 0.9]
    assert merged.pooled_p99_ms == 40.0  # all requests together: the stall decides
    assert merged.requests == 300


def test_turned_starts_each_round_one_further() -> None:
    keys = ["a", "b", "c"]
    assert [turned(keys, r) for r in range(4)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_ratios_to_nginx_are_medians_of_the_rounds_ratios() -> None:
    # Round 2 was a slow spell for both: paired ratios ignore it, ratios of medians would not.
    nginx = _peak("nginx", [50_000, 10_000, 52_000], [12.0, 30.0, 12.5])
    gateway = _peak("gateway_limits", [20_000, 2_000, 21_000], [48.0, 150.0, 50.0])
    section = peak_section({"nginx": nginx, "gateway_limits": gateway}, {})
    row = next(r for r in section["contenders"] if r["key"] == "gateway_limits")
    assert row["x_nginx_rps"] == pytest.approx(0.4, abs=0.01)
    assert row["x_nginx_cpu"] == pytest.approx(4.0, abs=0.01)
    assert row["per_core_x_nginx"] == pytest.approx(0.25, abs=0.01)
    assert "x_nginx_rps" not in next(r for r in section["contenders"] if r["key"] == "nginx")


def test_scaling_is_argued_from_cpu_per_request() -> None:
    one = ScalingRun(1, _peak("w1", [15_000], [50.0]), shares_load_cpu=False)
    two = ScalingRun(2, _peak("w2", [16_000], [55.0]), shares_load_cpu=True)
    assert one.argued_rps == pytest.approx(20_000)
    assert two.argued_rps == pytest.approx(2e6 / 55)
    section = scaling_section([one, two], {1: "x", 2: "y"})
    assert section["argued_x2"] == pytest.approx(1.818, abs=0.001)
    assert section["measured_x2"] == pytest.approx(1.067, abs=0.001)
    assert section["measured_x2_beside_load"] is True


def test_a_quiet_run_shows_no_busy_sign() -> None:
    quiet = {"direct": _rate(0.05, 0.2, [0.2, 0.21]), "gateway": _rate(0.3, 0.9, [0.8, 1.0])}
    assert busy_signs(quiet) == []


def test_a_slow_direct_or_disagreeing_rounds_are_busy_signs() -> None:
    signs = busy_signs({"direct": _rate(0.05, 3.0, [2.9, 3.1]),
                        "gateway": _rate(0.3, 4.0, [0.9, 6.0]),
                        "nginx": _rate(0.2, 0.5, [0.5, 0.5], achieved=700.0)})
    assert any(s.startswith("direct's own p99 is 3.00 ms") for s in signs)
    assert any(s.startswith("gateway: rounds' p99 disagree") for s in signs)
    assert any(s.startswith("nginx: 700 of 1000") for s in signs)


def test_added_latency_is_over_direct_and_over_nginx() -> None:
    section = latency_section({"direct": _rate(0.05, 0.2, []), "nginx": _rate(0.2, 0.6, []),
                               "gateway": _rate(0.3, 1.0, [])}, {}, [], {"rate": 1000})
    row = next(r for r in section["contenders"] if r["key"] == "gateway")
    assert (row["added_p50_ms"], row["added_p99_ms"]) == (0.25, 0.8)
    assert (row["over_nginx_p50_ms"], row["over_nginx_p99_ms"]) == (0.1, 0.4)


def test_targets_fail_when_over_and_say_when_the_machine_was_busy() -> None:
    data = {"latency": {"plan": {"rate": 1000}, "busy": ["direct's own p99 ..."],
                        "contenders": [{"key": "gateway_limits", "label": "limits",
                                        "added_p99_ms": 2.5}]},
            "peak": {"contenders": [{"key": "gateway", "redis_round_trips_per_request": 0.0}]}}
    checks = {c["target"]: c for c in check_targets(data)}
    assert checks["limits: added p99 at 1000 req/s <= 2 ms"]["ok"] is False
    assert checks["limits: added p99 at 1000 req/s <= 2 ms"]["note"]
    assert checks["warm key: Redis round trips per request = 0"]["ok"] is True


def test_cpu_roles_on_two_cpus() -> None:
    plan = CpuPlan((0, 1))
    assert plan.load == {0}
    assert plan.contender(1) == {1}
    assert plan.contender(2) == {0, 1}  # no two CPUs of its own: all of them
    assert not plan.shares_load_cpu(1)
    assert plan.shares_load_cpu(2)


def test_cpu_roles_on_four_cpus_and_unpinned() -> None:
    plan = CpuPlan((0, 1, 2, 3))
    assert plan.contender(2) == {1, 2}
    assert not plan.shares_load_cpu(2)
    loose = CpuPlan((0, 1), pinned=False)
    assert loose.load is None and loose.contender(1) is None
    assert loose.shares_load_cpu(1)
