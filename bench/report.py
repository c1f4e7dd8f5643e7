"""The results: one table and the targets' verdicts on the terminal, everything in JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.throughput import CaseResult

__all__ = ["check_targets", "render", "save", "throughput_rows"]

GATEWAY_CASES = ("gateway", "gateway_cold", "gateway_limits")


def _ratio(case: CaseResult, other: CaseResult | None) -> float | None:
    """Requests/s of `case` over `other`: the median of the rounds' ratios (each round ran the
    two a few seconds apart, so a slow spell of the machine hits both), else of the totals."""
    if other is None:
        return None
    pairs = list(zip(case.peak.rounds, other.peak.rounds, strict=False))
    if len(pairs) > 1 and len(case.peak.rounds) == len(other.peak.rounds):
        ratios = sorted(a / b for a, b in pairs if b)
        mid = len(ratios) // 2
        value = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
    else:
        value = case.peak.rps / other.peak.rps
    return round(value, 3)


def throughput_rows(results: Sequence[CaseResult]) -> list[dict[str, Any]]:
    """Each case with its ratios to the bare proxy and to direct, same workers, same run."""
    rows = []
    by_key = {(r.workers, r.case): r for r in results}
    for result in results:
        bare = by_key.get((result.workers, "bare"))
        direct = by_key.get((result.workers, "direct"))
        row = result.as_dict()
        row["vs_bare"] = _ratio(result, bare)
        if result.case == "gateway":  # what the access log costs: same gateway without it
            row["vs_access_log_off"] = _ratio(result, by_key.get((result.workers,
                                                                   "gateway_quiet")))
        row["vs_direct"] = _ratio(result, direct)
        added = None
        if direct and direct.fixed_rate and result.fixed_rate:
            added = round(result.fixed_rate.p99_ms - direct.fixed_rate.p99_ms, 3)
        row["added_p99_ms_vs_direct"] = added
        rows.append(row)
    return rows


def check_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and a verdict."""
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, limit: float, *, at_least: bool = False) -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            checks.append({"target": name, "value": None, "limit": limit, "ok": None})
            return
        ok = value >= limit if at_least else value <= limit
        checks.append({"target": name, "value": round(value, 3), "limit": limit, "ok": ok})

    bare_p99 = {row["workers"]: row["added_p99_ms_vs_direct"]
                for row in data.get("throughput", []) if row["case"] == "bare"}
    for row in data.get("throughput", []):
        workers = row["workers"]
        if row["case"] == "gateway":
            check(f"gateway req/s >= 0.9 x bare proxy ({workers} worker(s))", row["vs_bare"],
                  0.9, at_least=True)
            check(f"warm cache: Redis round trips per request = 0 ({workers} worker(s))",
                  row["redis_round_trips_per_request"], 0.01)
            # The bare proxy's own figure tells the gateway's share from the stack's.
            bare = bare_p99.get(workers)
            beside = "" if bare is None else f"; the bare proxy alone: {bare:+.2f} ms"
            check(f"added p99 at half peak <= 2 ms ({workers} worker(s){beside})",
                  row["added_p99_ms_vs_direct"], 2.0)
            quiet = row.get("vs_access_log_off")
            check(f"access log costs <= 5% of req/s ({workers} worker(s))",
                  None if quiet is None else 1 - quiet, 0.05)
        if row["case"] == "gateway_limits":
            check(f"rate limits on: Redis round trips per request <= 1 ({workers} worker(s))",
                  row["redis_round_trips_per_request"], 1.01)
    scale = data.get("scale")
    if scale:
        cold = next((s for s in scale["lookups"] if s["name"] == "cold"), None)
        check(f"cold lookup p99 <= 5 ms ({scale['keys']:,} keys)",
              cold["p99_ms"] if cold else None, 5.0)
    revocation = data.get("revocation")
    if revocation:
        for phase, limit in (("redis_up", 100.0), ("redis_down", 2000.0)):
            result = revocation[phase]
            value = result["p99_ms"] if not result["not_refused_within_s"] else math.inf
            check(f"revocation seen by every process, {result['phase']}: p99 <= "
                  f"{limit:.0f} ms", value, limit)
    return checks


def _num(value: float | None, fmt: str, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    return format(value, fmt).rjust(width)


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [f"Keygate benchmark, {meta['date']} (commit {meta['commit']}, {meta['cpus']} CPUs, "
             f"PostgreSQL + Redis: {meta['stores']})", f"command: {meta['command']}"]
    plan = meta.get("plan")
    rows = data.get("throughput", [])
    if rows and plan:
        lines.append(
            f"peak: wrk, {plan['connections']} connections, {plan['rounds']} interleaved rounds "
            f"of {plan['duration'] / plan['rounds']:.0f} s per case (medians). "
            f"fixed rate: h2load --rps, half the warm gateway's peak, same rate for every case."
            + (" Pinned: 1-worker servers on CPU 0, load and upstream on the others."
               if plan.get("pin") else ""))
        lines.append("")
        header = (f"{'w':>1} {'case':<25} {'peak req/s':>10} {'x bare':>6} {'x direct':>8} "
                  f"{'p50':>6} {'p99':>7} {'CPU':>6} | {'rate':>6} {'p50':>6} {'p99':>6} "
                  f"{'+p99':>6} | {'Redis':>7}")
        units = (f"{'':>1} {'':<25} {'':>10} {'':>6} {'':>8} {'ms (wrk)':>14} {'us/req':>6} | "
                 f"{'req/s':>6} {'ms at fixed rate':>20} | {'RTT/req':>7}")
        lines += [header, units, "-" * len(header)]
        for row in rows:
            peak, fixed = row["peak"], row["fixed_rate"] or {}
            added = row["added_p99_ms_vs_direct"] if row["case"] != "direct" else None
            lines.append(
                f"{row['workers']:>1} {row['label']:<25} {peak['rps']:>10.0f} "
                f"{_num(row['vs_bare'], '.2f', 6)} {_num(row['vs_direct'], '.3f', 8)} "
                f"{peak['p50_ms']:>6.2f} {peak['p99_ms']:>7.2f} "
                f"{_num(row['cpu_us_per_request'], '.0f', 6)} | "
                f"{_num(fixed.get('achieved_rps'), '.0f', 6)} "
                f"{_num(fixed.get('p50_ms'), '.2f', 6)} {_num(fixed.get('p99_ms'), '.2f', 6)} "
                f"{_num(added, '+.2f', 6)} | "
                f"{_num(row['redis_round_trips_per_request'], '.2f', 7)}"
                + ("  ERRORS" if peak["errors"] or fixed.get("errors") else ""))
        lines.append("")
    counts = data.get("instructions")
    if counts:
        lines += _instruction_lines(counts)
    scale = data.get("scale")
    if scale:
        lines.append(f"scale: {scale['keys']:,} keys ({scale['table_bytes'] / 1e6:.0f} MB with "
                     f"indexes, written in {scale['populate_seconds']} s), lookups of random "
                     f"keys no cache has seen:")
        for s in scale["lookups"]:
            lines.append(f"  {s['name']:<22} p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms"
                         f"  max {s['max_ms']:6.2f} ms  {s['per_second']:7.0f} lookups/s"
                         f"  ({s['lookups']:,} lookups)")
        lines.append("")
    revocation = data.get("revocation")
    if revocation:
        lines.append(f"revocation: {revocation['gateways']} gateway processes, time from "
                     f"delete_key() to the last one's first 401 (polled every "
                     f"{revocation['poll_interval_ms']:.0f} ms):")
        for phase in ("redis_up", "redis_down"):
            r = revocation[phase]
            lines.append(f"  {r['phase']:<10} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
                         f"  max {r['max_ms']} ms  ({r['deletions']} deletions, "
                         f"{r['not_refused_within_s']} not refused)")
        lines.append("")
    profile = data.get("profile")
    if profile:
        lines.append(f"profile of the warm gateway (1 worker) under wrk, top self time "
                     f"({profile['samples']} samples; files: {', '.join(profile['files'])}):")
        for item in profile["self_top"][:12]:
            lines.append(f"  {item['share']:6.1%}  {item['function']}")
        lines.append("")
    checks = data.get("targets", [])
    if checks:
        lines.append("targets:")
        for c in checks:
            verdict = {True: "PASS", False: "FAIL", None: "n/a "}[c["ok"]]
            lines.append(f"  [{verdict}] {c['target']}: {c['value']}")
    return "\n".join(lines)


def _instruction_lines(counts: list[dict[str, Any]]) -> list[str]:
    bare = next((c["per_request"] for c in counts if c["case"] == "bare"), None)
    lines = [f"instructions per request (callgrind, {counts[0]['requests']:,} requests one after "
             f"another on one connection, user space, idle rate removed; 1 worker):"]
    for count in counts:
        value = count["per_request"]
        versus = ("" if bare is None or count["case"] == "bare"
                  else f"  {bare / value:.3f} x bare ({value - bare:+,} instructions)")
        lines.append(f"  {count['label']:<25} {value:>10,}{versus}")
    lines.append("")
    return lines


def save(data: dict[str, Any], folder: Path, stamp: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench-{stamp}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
