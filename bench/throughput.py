"""The six throughput cases, for each worker count: peak with wrk, latency at a fixed rate.

1. direct to the upstream (nginx answering a small JSON body);
2. the bare pass-through proxy (bench/bare_proxy.py: the gateway's forwarding code, no checks);
3. the gateway, full pipeline, warm key cache, rate limits off;
4. the gateway, key cache cold (every lookup asks Redis, or PostgreSQL behind it);
5. the gateway with rate limits on (one Redis round trip per request, nothing refused);
6. nginx proxy_pass with HTTP/1.1 keep-alive to the upstream: the reference.

Every case gets the same request (the private route, with a key), so each forwards the same
bytes. The fixed rate is half the peak of case 3 for that worker count, the same for every
case, so "added latency" compares equal loads.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.bare_proxy import BareProxyProcess
from bench.gateways import BENCH_DIR, PRIVATE_PATH, GatewayProcess, Secrets, issue_keys
from bench.load import PeakResult, RateResult, merge_peaks, merge_rates, run_h2load, run_wrk
from bench.nginx import Nginx
from bench.procs import Server
from bench.redis_calls import CommandCounter, RoundTripMonitor

__all__ = ["CASES", "CaseResult", "LoadPlan", "run_throughput"]

CASES: dict[str, str] = {
    "direct": "direct to upstream",
    "bare": "bare aiohttp proxy",
    "gateway": "gateway, warm cache",
    "gateway_quiet": "gateway, access log off",
    "gateway_cold": "gateway, cold cache",
    "gateway_limits": "gateway, rate limits on",
    "nginx": "nginx proxy_pass",
}


@dataclass(frozen=True)
class LoadPlan:
    duration: float  # per case and worker count, split into `rounds`
    warmup: float
    connections: int
    rate_clients: int
    rounds: int
    # 1 worker: servers on CPU 0, this process and its load generators (and the upstream,
    # started before) on the others; several workers: servers on every CPU.
    pin: bool = False


@dataclass
class CaseResult:
    workers: int
    case: str
    peak: PeakResult
    # Per request, by command, those run by scripts included; idle chatter (pub/sub pings,
    # health checks) below 1% of the requests is left out.
    redis_commands: dict[str, float] = field(default_factory=dict)
    fixed_rate: RateResult | None = None
    redis_round_trips: float | None = None  # per request, gateways only (MONITOR)
    cpu_us: float | None = None  # CPU time of the server's processes per request, at peak

    @property
    def label(self) -> str:
        return CASES[self.case]

    @property
    def redis_per_request(self) -> float:
        return sum(self.redis_commands.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "workers": self.workers, "case": self.case, "label": self.label,
            "peak": self.peak.as_dict(),
            "cpu_us_per_request": None if self.cpu_us is None else round(self.cpu_us, 1),
            "fixed_rate": self.fixed_rate.as_dict() if self.fixed_rate else None,
            "redis_round_trips_per_request": (None if self.redis_round_trips is None
                                              else round(self.redis_round_trips, 3)),
            "redis_commands_per_request": round(self.redis_per_request, 3),
            "redis_commands_by_name": {k: round(v, 3) for k, v in self.redis_commands.items()},
        }


def _start_servers(workers: int, workdir: Path, upstream: Nginx, database_url: str,
                   redis_url: str, secrets_: Secrets) -> dict[str, Server]:
    """Every case's server for this worker count (the upstream itself serves case 1)."""
    servers: dict[str, Server] = {}
    gateway = functools.partial(GatewayProcess, workdir=workdir, database_url=database_url,
                                redis_url=redis_url, upstream_url=upstream.url,
                                secrets_=secrets_, workers=workers)
    try:
        servers["bare"] = BareProxyProcess(f"bare-proxy-w{workers}", workdir, upstream.url,
                                           workers)
        servers["gateway"] = gateway(f"gateway-w{workers}")
        servers["gateway_quiet"] = gateway(f"gateway-quiet-w{workers}",
                                           config="gateway-quiet.yaml")
        servers["gateway_cold"] = gateway(f"gateway-cold-w{workers}",
                                          config="gateway-cold.yaml")
        servers["gateway_limits"] = gateway(f"gateway-limits-w{workers}", rate_limits=True)
        servers["nginx"] = Nginx.proxy(workdir / f"nginx-proxy-w{workers}", workers,
                                       upstream.port)
    except BaseException:
        _stop_servers(servers)
        raise
    return servers


def _stop_servers(servers: dict[str, Server]) -> None:
    for server in servers.values():
        server.stop()


_COLD_KEYS = 1000  # the cold case's wrk sends each request with the next of these keys


def _round_trips(redis_url: str, prefix: str, url: str, headers: dict[str, str],
                 script: tuple[Path, list[str]] | None) -> float:
    """Round trips to Redis per request, on a light load (MONITOR would slow a heavy one)."""
    with RoundTripMonitor(redis_url, prefix) as monitor:
        light = run_wrk(url, connections=2, duration=1, headers=headers, script=script)
    return monitor.count / max(1, light.requests)


def run_throughput(workers_list: list[int], plan: LoadPlan, workdir: Path, upstream: Nginx,
                   database_url: str, redis_url: str, secrets_: Secrets,
                   say: Callable[[str], None]) -> list[CaseResult]:
    """Each case in `plan.rounds` interleaved rounds (so drift and neighbours hit all alike)."""
    tokens = asyncio.run(issue_keys(database_url, secrets_, _COLD_KEYS))
    headers = {"Authorization": f"Bearer {tokens[0]}"}
    token_file = workdir / "tokens.txt"
    token_file.write_text("\n".join(tokens) + "\n")
    # The cold case at peak: many keys, so that concurrent requests never share a lookup.
    scripts: dict[str, tuple[Path, list[str]]] = {
        "gateway_cold": (BENCH_DIR / "tokens.lua", [str(token_file)])}
    counter = CommandCounter(redis_url)
    results: list[CaseResult] = []
    slice_ = plan.duration / plan.rounds
    try:
        for workers in workers_list:
            say(f"throughput, {workers} worker(s): starting servers")
            servers = _start_servers(workers, workdir, upstream, database_url, redis_url,
                                     secrets_)
            if plan.pin:
                cpus = {0} if workers == 1 else set(range(os.cpu_count() or 1))
                for server in servers.values():
                    server.child.pin(cpus)
            try:
                every: dict[str, Server] = {"direct": upstream, **servers}
                urls = {case: every[case].url + PRIVATE_PATH for case in CASES}
                for case, url in urls.items():
                    run_wrk(url, connections=plan.connections, duration=plan.warmup,
                            headers=headers, script=scripts.get(case))
                peaks: dict[str, list[PeakResult]] = {case: [] for case in CASES}
                redis_calls: dict[str, dict[str, float]] = {case: {} for case in CASES}
                cpu: dict[str, float] = dict.fromkeys(CASES, 0.0)
                for _ in range(plan.rounds):
                    for case, url in urls.items():
                        before = counter.read()
                        cpu_before = every[case].cpu_seconds()
                        peak = run_wrk(url, connections=plan.connections, duration=slice_,
                                       headers=headers, script=scripts.get(case))
                        cpu[case] += every[case].cpu_seconds() - cpu_before
                        peaks[case].append(peak)
                        for name, calls in counter.calls_since(before).items():
                            redis_calls[case][name] = redis_calls[case].get(name, 0) + calls
                by_case: dict[str, CaseResult] = {}
                for case in CASES:
                    peak = merge_peaks(peaks[case])
                    per_request = {name: calls / peak.requests
                                   for name, calls in sorted(redis_calls[case].items())
                                   if calls > peak.requests * 0.01}
                    result = by_case[case] = CaseResult(workers, case, peak, per_request)
                    result.cpu_us = cpu[case] / max(1, peak.requests) * 1e6
                    prefix = every[case].redis_prefix
                    if prefix is not None:
                        result.redis_round_trips = _round_trips(
                            redis_url, prefix, urls[case], headers, scripts.get(case))
                    say(f"  peak  {CASES[case]:<26} {peak.rps:>9.0f} req/s  "
                        f"p99 {peak.p99_ms:6.2f} ms  CPU {result.cpu_us:5.0f} us/req  "
                        f"Redis round trips/req "
                        + ("-" if result.redis_round_trips is None
                           else f"{result.redis_round_trips:.2f}")
                        + (f"  ERRORS {peak.errors}" if peak.errors else ""))
                rate = by_case["gateway"].peak.rps / 2
                fixed: dict[str, list[RateResult]] = {case: [] for case in CASES}
                for _ in range(plan.rounds):
                    for case, url in urls.items():
                        fixed[case].append(run_h2load(url, rate=rate, duration=slice_,
                                                      clients=plan.rate_clients,
                                                      headers=headers))
                for case in CASES:
                    merged = by_case[case].fixed_rate = merge_rates(fixed[case])
                    say(f"  rate  {CASES[case]:<26} {merged.achieved_rps:>9.0f} req/s  "
                        f"p50 {merged.p50_ms:6.2f} ms  p99 {merged.p99_ms:6.2f} ms"
                        + (f"  ERRORS {merged.errors}" if merged.errors else ""))
                results.extend(by_case.values())
            finally:
                _stop_servers(servers)
    finally:
        counter.close()
    return results
