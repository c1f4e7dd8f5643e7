"""The results: one table and the targets' verdicts on the terminal, everything in JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.load import RateResult, median
from bench.peak import PeakRun
from bench.scaling import ScalingRun

__all__ = ["FIGURE_OF_MERIT", "check_targets", "latency_section", "peak_section", "render",
           "save", "scaling_section"]

GATEWAYS = ("gateway", "gateway_cold", "gateway_limits")
FIGURE_OF_MERIT = "gateway_limits"  # the full default pipeline


def _paired(runs: PeakRun, reference: PeakRun, attribute: str) -> float | None:
    """Median of the rounds' ratios (each round ran the two seconds apart, so a slow spell
    of the machine hits both), for `rps` or `cpu_us`."""
    if attribute == "rps":
        ours, theirs = [r.rps for r in runs.rounds], [r.rps for r in reference.rounds]
    else:
        ours, theirs = runs.cpu_us, reference.cpu_us
    ratios = [a / b for a, b in zip(ours, theirs, strict=False) if b]
    return round(median(ratios), 3) if ratios else None


def peak_section(runs: dict[str, PeakRun], plan: dict[str, Any]) -> dict[str, Any]:
    """Each contender's medians and rounds, and each gateway's ratios to nginx."""
    rows = []
    nginx = runs.get("nginx")
    for key, run in runs.items():
        row = run.as_dict()
        if nginx is not None and key in GATEWAYS:
            cpu = _paired(run, nginx, "cpu_us")
            row["x_nginx_rps"] = _paired(run, nginx, "rps")
            row["x_nginx_cpu"] = cpu
            row["per_core_x_nginx"] = round(1 / cpu, 3) if cpu else None
        rows.append(row)
    return {"plan": plan, "contenders": rows}


def latency_section(results: dict[str, RateResult], labels: dict[str, str],
                    signs: list[str], plan: dict[str, Any]) -> dict[str, Any]:
    direct, nginx = results.get("direct"), results.get("nginx")
    rows = []
    for key, result in results.items():
        row: dict[str, Any] = {"key": key, "label": labels.get(key, key), **result.as_dict()}
        if direct is not None and key != "direct":
            row["added_p50_ms"] = round(result.p50_ms - direct.p50_ms, 3)
            row["added_p99_ms"] = round(result.p99_ms - direct.p99_ms, 3)
        if nginx is not None and key in GATEWAYS:  # the gateway's share of the added time
            row["over_nginx_p50_ms"] = round(result.p50_ms - nginx.p50_ms, 3)
            row["over_nginx_p99_ms"] = round(result.p99_ms - nginx.p99_ms, 3)
        rows.append(row)
    return {"plan": plan, "contenders": rows, "busy": signs}


def scaling_section(runs: Sequence[ScalingRun], cpus: dict[int, str]) -> dict[str, Any]:
    by_workers = {run.workers: run for run in runs}
    section: dict[str, Any] = {"runs": [run.as_dict() for run in runs],
                               "cpus": {str(w): text for w, text in cpus.items()}}
    one = by_workers.get(1)
    for workers, run in by_workers.items():
        if one is None or workers == 1:
            continue
        section[f"measured_x{workers}"] = round(run.peak.rps / one.peak.rps, 3)
        section[f"argued_x{workers}"] = round(run.argued_rps / one.argued_rps, 3)
        section[f"measured_x{workers}_beside_load"] = run.shares_load_cpu
    return section


def check_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The project's targets, each with the measured value and a verdict."""
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, limit: float, *, note: str = "") -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            checks.append({"target": name, "value": None, "limit": limit, "ok": None})
            return
        checks.append({"target": name, "value": round(value, 3), "limit": limit,
                       "ok": value <= limit, "note": note})

    for row in data.get("peak", {}).get("contenders", []):
        if row["key"] == "gateway":
            check("warm key: Redis round trips per request = 0",
                  row["redis_round_trips_per_request"], 0.01)
        if row["key"] == "gateway_limits":
            check("rate limits on: Redis round trips per request <= 1",
                  row["redis_round_trips_per_request"], 1.01)
    latency = data.get("latency")
    if latency:
        rate = latency["plan"]["rate"]
        busy = "machine busy, see above" if latency["busy"] else ""
        for row in latency["contenders"]:
            if row["key"] in ("gateway", FIGURE_OF_MERIT):
                check(f"{row['label']}: added p99 at {rate:.0f} req/s <= 2 ms",
                      row.get("added_p99_ms"), 2.0, note=busy)
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


def _spread(values: Sequence[float], fmt: str) -> str:
    return f"{format(min(values), fmt)}-{format(max(values), fmt)}" if values else "-"


def _peak_lines(section: dict[str, Any]) -> list[str]:
    plan = section["plan"]
    lines = [f"Peak: wrk -t1 -c{plan['connections']}, {plan['rounds']} rounds of "
             f"{plan['seconds']:g} s per contender, alternating (medians; min-max of the "
             f"rounds). {plan['cpus']}.",
             f"{'contender':<26} {'req/s':>8} {'rounds':>13} {'CPU us/req':>10} "
             f"{'rounds':>11} {'x nginx':>7} {'x nginx':>7} {'per core':>8} {'Redis':>5}",
             f"{'':<26} {'':>8} {'':>13} {'':>10} {'':>11} {'req/s':>7} {'CPU':>7} "
             f"{'x nginx':>8} {'RTT':>5}"]
    lines.append("-" * len(lines[1]))
    for row in section["contenders"]:
        lines.append(
            f"{row['label']:<26} {row['rps']:>8.0f} {_spread(row['rps_rounds'], '.0f'):>13} "
            f"{row['cpu_us_per_request']:>10.1f} {_spread(row['cpu_us_rounds'], '.1f'):>11} "
            f"{_num(row.get('x_nginx_rps'), '.2f', 7)} {_num(row.get('x_nginx_cpu'), '.2f', 7)} "
            f"{_num(row.get('per_core_x_nginx'), '.2f', 8)} "
            f"{_num(row['redis_round_trips_per_request'], '.2f', 5)}"
            + (f"  ERRORS {row['errors']}" if row["errors"] else ""))
    merit = next((r for r in section["contenders"] if r["key"] == FIGURE_OF_MERIT), None)
    if merit is not None and merit.get("per_core_x_nginx") is not None:
        lines.append(f"Figure of merit (full default pipeline vs nginx, per core): "
                     f"{merit['per_core_x_nginx']:.2f} (nginx CPU/req over the gateway's; "
                     f"the req/s ratio, {merit['x_nginx_rps']:.2f}, understates nginx, which "
                     "does not fill its core here)")
    return [*lines, ""]


def _latency_lines(section: dict[str, Any]) -> list[str]:
    plan = section["plan"]
    lines = [f"Added latency: h2load, {plan['rate']:.0f} req/s over {plan['clients']} "
             f"connections, {plan['rounds']} rounds of {plan['seconds']:g} s per contender "
             f"(medians of the rounds' percentiles). {plan['cpus']}.",
             f"{'contender':<26} {'req/s':>6} {'p50':>7} {'p99':>7} {'+p50':>7} "
             f"{'+p99':>7} {'+p50':>7} {'+p99':>7}  rounds' p99",
             f"{'':<26} {'':>6} {'ms':>7} {'ms':>7} {'over direct':>15} "
             f"{'over nginx':>15}  ms"]
    lines.append("-" * (len(lines[1]) + 12))
    for row in section["contenders"]:
        lines.append(
            f"{row['label']:<26} {row['achieved_rps']:>6.0f} {row['p50_ms']:>7.3f} "
            f"{row['p99_ms']:>7.3f} {_num(row.get('added_p50_ms'), '+.3f', 7)} "
            f"{_num(row.get('added_p99_ms'), '+.3f', 7)} "
            f"{_num(row.get('over_nginx_p50_ms'), '+.3f', 7)} "
            f"{_num(row.get('over_nginx_p99_ms'), '+.3f', 7)}  "
            + ", ".join(f"{p:.2f}" for p in row["rounds_p99_ms"])
            + (f"  ERRORS {row['errors']}" if row["errors"] else ""))
    for sign in section["busy"]:
        lines.append(f"  ! p99 may not mean much: {sign}")
    return [*lines, ""]


def _scaling_lines(section: dict[str, Any]) -> list[str]:
    lines = ["Scaling: gateway, rate limits on (full default pipeline), --workers N:",
             f"{'workers':>7} {'measured req/s':>14} {'CPU us/req':>10} {'argued req/s':>12}"
             "  (argued: N cores / CPU per request)"]
    for run in section["runs"]:
        lines.append(f"{run['workers']:>7} {run['rps']:>14.0f} {run['cpu_us_per_request']:>10.1f} "
                     f"{run['argued_rps']:>12.0f}  {section['cpus'][str(run['workers'])]}")
    for run in section["runs"]:
        workers = run["workers"]
        if f"argued_x{workers}" in section:
            beside = section[f"measured_x{workers}_beside_load"]
            lines.append(
                f"1 -> {workers} workers: argued x{section[f'argued_x{workers}']:.2f} (the "
                f"figure), measured x{section[f'measured_x{workers}']:.2f}"
                + (" (the workers shared the cores with the load generator and the upstream: "
                   "the measured figure is the machine's, not the gateway's)" if beside else ""))
    return [*lines, ""]


def _instruction_lines(counts: list[dict[str, Any]]) -> list[str]:
    lines = ["Instructions per request (callgrind; the edge in one process on fake transports; "
             "(count of 2N - count of N) / N):"]
    for count in counts:
        lines.append(f"  {count['label']:<55} {count['per_request']:>9,}  "
                     f"(N = {count['requests']:,})")
    return [*lines, ""]


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    loads = meta.get("load_average", {})
    lines = [f"Keygate benchmark, {meta['date']} (commit {meta['commit']}, {meta['cpus']} CPUs, "
             f"PostgreSQL + Redis: {meta['stores']})", f"command: {meta['command']}",
             "load average (1, 5, 15 min) at the start " + " ".join(map(str, loads.get(
                 "start", []))) + ", at the end " + " ".join(map(str, loads.get("end", []))),
             ""]
    if "peak" in data:
        lines += _peak_lines(data["peak"])
    if "latency" in data:
        lines += _latency_lines(data["latency"])
    if "scaling" in data:
        lines += _scaling_lines(data["scaling"])
    if data.get("instructions"):
        lines += _instruction_lines(data["instructions"])
    scale = data.get("scale")
    if scale:
        lines.append(f"Key scale: {scale['keys']:,} keys ({scale['table_bytes'] / 1e6:.0f} MB "
                     f"with indexes, written in {scale['populate_seconds']} s), lookups of "
                     "random keys no cache has seen:")
        for s in scale["lookups"]:
            lines.append(f"  {s['name']:<22} p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms"
                         f"  max {s['max_ms']:6.2f} ms  {s['per_second']:7.0f} lookups/s"
                         f"  ({s['lookups']:,} lookups)")
        lines.append("")
    revocation = data.get("revocation")
    if revocation:
        lines.append(f"Revocation: {revocation['gateways']} gateway processes, time from "
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
        lines.append(f"Profile of the gateway (rate limits on, 1 worker) under wrk, top self "
                     f"time ({profile['samples']} samples; files: {', '.join(profile['files'])}):")
        for item in profile["self_top"][:12]:
            lines.append(f"  {item['share']:6.1%}  {item['function']}")
        lines.append("")
    if isinstance(data.get("streams"), str):
        lines += [data["streams"], ""]
    checks = data.get("targets", [])
    if checks:
        lines.append("Targets (measured, not asserted):")
        for c in checks:
            verdict = {True: "PASS", False: "FAIL", None: "n/a "}[c["ok"]]
            note = f"  ({c['note']})" if c.get("note") else ""
            lines.append(f"  [{verdict}] {c['target']}: {c['value']}{note}")
    return "\n".join(lines)


def save(data: dict[str, Any], folder: Path, stamp: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench-{stamp}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
