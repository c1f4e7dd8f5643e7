"""Load generators: wrk for the peak (closed loop), h2load --rps for latency at a fixed rate.

A closed-loop tool at saturation measures queueing, not the cost of a request: its latency
is (connections / throughput). Latency is therefore measured at a fixed offered rate, below
saturation, where it shows what each request costs.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.procs import on_cpus

__all__ = ["PeakResult", "RateResult", "median", "merge_rates", "percentile", "run_h2load",
           "run_wrk"]

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of an already sorted list, nearest rank."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def median(values: Sequence[float]) -> float:
    """The middle value (the mean of the two middle ones for an even count); NaN for none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (bench/setup.sh installs it)")
    return found


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


@dataclass
class PeakResult:
    """wrk at fixed concurrency: throughput, and latency (which includes queueing)."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx answers plus socket errors

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def run_wrk(url: str, *, connections: int, duration: float, threads: int = 1,
            headers: Mapping[str, str] | None = None,
            script: tuple[Path, Sequence[str]] | None = None,
            cpus: Collection[int] | None = None) -> PeakResult:
    """`script`: a wrk Lua script and its arguments (e.g. bench/tokens.lua and a token file);
    `cpus`: where wrk runs (None: anywhere)."""
    argv = [*on_cpus([_tool("wrk")], cpus), f"-t{threads}", f"-c{connections}",
            f"-d{max(1, round(duration))}s", "--latency", "--timeout", "10s"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if script is not None:
        argv += ["-s", str(script[0])]
    argv.append(url)
    if script is not None:
        argv += ["--", *script[1]]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s|m)\b", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s|m)\b", out)
    total = re.search(r"(\d+) requests in", out)
    if not (rps and p50 and p99 and total):
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(n) for n in sock.groups())
    return PeakResult(float(rps.group(1)), _ms(*p50.groups()), _ms(*p99.groups()),
                      int(total.group(1)), errors)


@dataclass
class RateResult:
    """h2load at a fixed offered rate: achieved rate and latency percentiles per request."""

    offered_rps: float
    achieved_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: int  # answers other than 2xx, and requests that failed
    samples: list[float] = field(default_factory=list, repr=False)  # sorted latencies, ms
    rounds_p99_ms: list[float] = field(default_factory=list)  # p99 of each round, when merged
    pooled_p99_ms: float | None = None  # when merged: the p99 of all the rounds' requests

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        del data["samples"]
        return data


def merge_rates(results: Sequence[RateResult]) -> RateResult:
    """Rounds of one case at the same rate: the medians of the rounds' percentiles, so that
    a stall of the machine during one round does not decide the figure (the p99 of all their
    requests together is kept beside them)."""
    samples = sorted(x for r in results for x in r.samples)
    achieved = sum(r.achieved_rps * r.requests for r in results) / max(1, len(samples))
    return RateResult(results[0].offered_rps, achieved, median([r.p50_ms for r in results]),
                      median([r.p90_ms for r in results]), median([r.p99_ms for r in results]),
                      samples[-1], len(samples), sum(r.errors for r in results), samples,
                      [round(r.p99_ms, 2) for r in results], percentile(samples, 99))


def run_h2load(url: str, *, rate: float, duration: float, clients: int = 10,
               headers: Mapping[str, str] | None = None, skip: float = 0.5,
               cpus: Collection[int] | None = None) -> RateResult:
    """`clients` HTTP/1.1 connections, each sending rate/clients requests per second
    (rounded), for `duration` seconds after the first `skip`; `cpus`: where h2load runs.

    h2load starts every client's timer when the client connects; connected all at once, the
    clients would fire together, in bursts of `clients` requests, and the latency measured
    would be that of a burst. So clients are connected a few per millisecond, spread over one
    interval of a client's timer: the requests arrive evenly. Requests sent in the first
    `skip` seconds (connections opening) are left out of the percentiles.
    """
    per_client = max(1, round(rate / clients))
    slots = max(1, 1000 // per_client)  # 1 ms slots in one interval of a client's timer
    per_slot = max(1, math.ceil(clients / slots))
    total = per_client * clients * max(1, math.ceil(duration + skip))
    with tempfile.TemporaryDirectory(prefix="keygate-h2load-") as tmp:
        log = Path(tmp) / "requests.tsv"
        argv = [*on_cpus([_tool("h2load")], cpus), "--h1", "-c", str(clients), "-t", "1",
                "--rps", str(per_client), "-r", str(per_slot), "--rate-period", "1ms",
                "-n", str(total),
                f"--log-file={log}"]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        argv.append(url)
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        rows = [line.split("\t") for line in log.read_text().splitlines()]
    rows = [row for row in rows if len(row) >= 3]
    if not rows:
        raise RuntimeError(f"h2load recorded no request:\n{out}")
    first = min(int(row[0]) for row in rows)
    latencies: list[float] = []
    starts: list[int] = []
    errors = 0
    for row in rows:
        start, status, elapsed = int(row[0]), int(row[1]), int(row[2])
        if start - first < skip * 1e6:
            continue
        if not 200 <= status < 400:
            errors += 1
            continue
        starts.append(start)
        latencies.append(elapsed / 1000)
    failed = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if failed:
        errors += int(failed.group(1))
    if not latencies:
        raise RuntimeError(f"h2load recorded no successful request:\n{out}")
    latencies.sort()
    span = (max(starts) - min(starts)) / 1e6 if len(starts) > 1 else 0.0
    achieved = (len(starts) - 1) / span if span > 0 else math.nan
    return RateResult(per_client * clients, achieved, percentile(latencies, 50),
                      percentile(latencies, 90), percentile(latencies, 99), latencies[-1],
                      len(latencies), errors, latencies)
