"""Added latency: every contender at one fixed, moderate rate (h2load, evenly spread requests).

A closed-loop tool at saturation measures queueing (its latency is connections / throughput),
so latency is measured here well below any contender's peak, at the same offered rate for
all: p50 and p99 of each, and the gateway's added p50/p99 over `direct`.

A p99 over a few seconds is decided by its slowest 1% of requests, so one stall of a shared
machine moves it. `busy_signs` says when that seems to have happened: `direct`'s own p99 above
`DIRECT_P99_BOUND` (a loopback nginx answers in a fraction of it), or a contender's rounds
disagreeing widely; the figures are printed all the same, with the warning beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.contenders import Stage
from bench.load import RateResult, median, merge_rates, run_h2load
from bench.peak import turned

__all__ = ["DIRECT_P99_BOUND", "LatencyPlan", "busy_signs", "run_latency"]

DIRECT_P99_BOUND = 1.0  # ms
_ROUNDS_SPREAD = 0.5  # ms: rounds' p99s further apart than this and than their median...
_ROUNDS_RATIO = 3.0  # ... and max/min above this: the rounds disagree


@dataclass(frozen=True)
class LatencyPlan:
    rate: float  # requests/s offered to every contender
    clients: int  # connections; each sends rate/clients per second
    rounds: int
    seconds: float  # per contender and round


def busy_signs(results: dict[str, RateResult]) -> list[str]:
    """Why the p99s of this run may say more about the machine than about the contenders."""
    signs: list[str] = []
    direct = results.get("direct")
    if direct is not None and direct.p99_ms > DIRECT_P99_BOUND:
        signs.append(f"direct's own p99 is {direct.p99_ms:.2f} ms (above "
                     f"{DIRECT_P99_BOUND:.1f} ms): the machine was busy")
    for key, result in results.items():
        p99s = result.rounds_p99_ms
        if len(p99s) < 2:
            continue
        low, high = min(p99s), max(p99s)
        if (high - low > max(_ROUNDS_SPREAD, median(p99s))
                and high > _ROUNDS_RATIO * max(low, 1e-3)):
            signs.append(f"{key}: rounds' p99 disagree ({low:.2f} to {high:.2f} ms)")
        if result.achieved_rps < 0.9 * result.offered_rps:
            signs.append(f"{key}: {result.achieved_rps:.0f} of {result.offered_rps:.0f} req/s "
                         "offered were sent")
    return signs


def run_latency(stage: Stage, keys: Sequence[str], plan: LatencyPlan) -> dict[str, RateResult]:
    """Every contender of `keys` at `plan.rate`, in alternating rounds; rounds merged."""
    contenders = {key: stage.contender(key) for key in keys}
    rounds: dict[str, list[RateResult]] = {key: [] for key in keys}
    for round_ in range(plan.rounds):
        for key in turned(list(keys), round_):
            contender = contenders[key]
            rounds[key].append(run_h2load(contender.url, rate=plan.rate, duration=plan.seconds,
                                          clients=plan.clients, headers=stage.headers,
                                          cpus=stage.cpus.load))
    merged = {key: merge_rates(results) for key, results in rounds.items()}
    for key, result in merged.items():
        stage.say(f"  rate  {contenders[key].label:<26} {result.achieved_rps:>6.0f} req/s  "
                  f"p50 {result.p50_ms:6.3f} ms  p99 {result.p99_ms:6.3f} ms  rounds' p99 "
                  f"{', '.join(f'{p:.2f}' for p in result.rounds_p99_ms)}"
                  + (f"  ERRORS {result.errors}" if result.errors else ""))
    return merged
