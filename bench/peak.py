"""Peak: every contender under wrk (closed loop), in alternating rounds; req/s and CPU time.

Each round runs every contender once, for the same few seconds, in an order that turns by
one each round; the figures are the medians of the rounds. So a slow spell of a shared
machine lands on one round of each contender rather than on all rounds of one.

CPU us/req is the user + system time of the contender's processes (from /proc) over the
requests wrk saw answered: what one request costs the contender, whatever the machine's
other work does to its requests/s. It is the steadier figure, and the one for comparing
throughput per core: a contender that reaches the load side's ceiling (see `direct`) shows
its cost there and not in its requests/s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.contenders import Contender, Stage
from bench.load import PeakResult, median, run_wrk
from bench.redis_calls import RoundTripMonitor

__all__ = ["PeakPlan", "PeakRun", "measure_round", "run_peak", "turned"]


@dataclass(frozen=True)
class PeakPlan:
    rounds: int
    seconds: float  # per contender and round
    warmup: float
    connections: int


@dataclass
class PeakRun:
    """One contender's rounds."""

    key: str
    label: str
    processes: int = 1
    rounds: list[PeakResult] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # per request, per round
    redis_round_trips: float | None = None  # per request, gateways only

    @property
    def rps(self) -> float:
        return median([r.rps for r in self.rounds])

    @property
    def cpu_us_per_request(self) -> float:
        return median(self.cpu_us)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)

    def as_dict(self) -> dict[str, object]:
        return {
            "key": self.key, "label": self.label, "processes": self.processes,
            "rps": round(self.rps, 1), "cpu_us_per_request": round(self.cpu_us_per_request, 2),
            "rps_rounds": [round(r.rps, 1) for r in self.rounds],
            "cpu_us_rounds": [round(c, 2) for c in self.cpu_us],
            "wrk_p50_ms": round(median([r.p50_ms for r in self.rounds]), 3),
            "wrk_p99_ms": round(median([r.p99_ms for r in self.rounds]), 3),
            "requests": sum(r.requests for r in self.rounds), "errors": self.errors,
            "redis_round_trips_per_request": (None if self.redis_round_trips is None
                                              else round(self.redis_round_trips, 3)),
        }


def turned(items: Sequence[str], round_: int) -> list[str]:
    """`items` started `round_` places further each round, so no one always goes first."""
    shift = round_ % len(items) if items else 0
    return [*items[shift:], *items[:shift]]


def measure_round(stage: Stage, contender: Contender, seconds: float,
                  connections: int) -> tuple[PeakResult, float]:
    """One run of wrk at `contender`: its result and the contender's CPU us per request."""
    before = contender.cpu_seconds()
    result = run_wrk(contender.url, connections=connections, duration=seconds,
                     headers=stage.headers, script=contender.script, cpus=stage.cpus.load)
    used = contender.cpu_seconds() - before
    return result, used / max(1, result.requests) * 1e6


def _round_trips(stage: Stage, contender: Contender) -> float | None:
    """Round trips to Redis per request, on a light load (MONITOR would slow a heavy one)."""
    prefix = contender.server.redis_prefix
    if prefix is None:
        return None
    with RoundTripMonitor(stage.redis_url, prefix) as monitor:
        light = run_wrk(contender.url, connections=2, duration=1, headers=stage.headers,
                        script=contender.script, cpus=stage.cpus.load)
    return monitor.count / max(1, light.requests)


def run_peak(stage: Stage, keys: Sequence[str], plan: PeakPlan) -> dict[str, PeakRun]:
    """Every contender of `keys`, `plan.rounds` alternating rounds."""
    contenders = {key: stage.contender(key) for key in keys}
    runs = {key: PeakRun(key, c.label, c.processes) for key, c in contenders.items()}
    for contender in contenders.values():  # connections, caches, lazily built state
        run_wrk(contender.url, connections=plan.connections, duration=plan.warmup,
                headers=stage.headers, script=contender.script, cpus=stage.cpus.load)
    for round_ in range(plan.rounds):
        for key in turned(list(keys), round_):
            result, cpu_us = measure_round(stage, contenders[key], plan.seconds,
                                           plan.connections)
            runs[key].rounds.append(result)
            runs[key].cpu_us.append(cpu_us)
        stage.say(f"  round {round_ + 1}/{plan.rounds}: " + "  ".join(
            f"{key} {runs[key].rounds[-1].rps:.0f}/s {runs[key].cpu_us[-1]:.1f}us"
            for key in keys))
    for key, contender in contenders.items():
        runs[key].redis_round_trips = _round_trips(stage, contender)
    for run in runs.values():
        stage.say(f"  peak  {run.label:<26} {run.rps:>8.0f} req/s  "
                  f"CPU {run.cpu_us_per_request:6.1f} us/req"
                  + ("" if run.redis_round_trips is None
                     else f"  Redis round trips/req {run.redis_round_trips:.2f}")
                  + (f"  ERRORS {run.errors}" if run.errors else ""))
    return runs
