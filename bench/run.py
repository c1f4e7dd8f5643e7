"""`make bench`: the gateway against nginx and direct-to-upstream, a table at the end, JSON
under bench/results/.

    python -m bench.run                       # everything, about 9 minutes
    python -m bench.run --quick               # short rounds, 100,000 keys: about 4 minutes
    python -m bench.run --parts peak,latency  # only those parts

Parts: peak (req/s and CPU us/req of each contender, pinned), latency (p50/p99 at a fixed
rate, added over direct), scaling (1 and 2 workers, measured and argued), instructions
(callgrind count of the edge's request path), profile (py-spy), scale (lookups among many
keys), revocation (a deleted key refused everywhere), streams (bench/streams.py, if present).
See bench/README.md for what each measures and how to read the table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.contenders import LABELS, Stage
from bench.cpus import CpuPlan
from bench.gateways import BENCH_DIR, PRIVATE_PATH, Secrets
from bench.latency import LatencyPlan, busy_signs, run_latency
from bench.nginx import Nginx
from bench.peak import PeakPlan, run_peak
from bench.procs import ROOT, stop_all
from bench.report import (
    check_targets,
    latency_section,
    peak_section,
    render,
    save,
    scaling_section,
)
from bench.scaling import run_scaling
from bench.services import open_stores

__all__ = ["PARTS", "main"]

PARTS = ("peak", "latency", "scaling", "instructions", "profile", "scale", "revocation",
         "streams")
CONTENDERS = tuple(LABELS)


def _say(message: str) -> None:
    print(message, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="3 rounds of 2 s, 100,000 keys, 20 deletions, 1,000 counted requests")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated, any of {', '.join(PARTS)} (default: all)")
    p.add_argument("--contenders", default=",".join(CONTENDERS),
                   help=f"peak and latency: any of {', '.join(CONTENDERS)} (default: all)")
    p.add_argument("--rounds", type=int, help="peak and scaling: rounds (5; quick 3)")
    p.add_argument("--seconds", type=float,
                   help="peak and scaling: seconds per contender and round (5; quick 2)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    p.add_argument("--rate", type=float, default=1000.0,
                   help="latency: requests/s offered to every contender (1000)")
    p.add_argument("--rate-clients", type=int, default=10,
                   help="latency: h2load connections sharing the rate (10)")
    p.add_argument("--latency-rounds", type=int, help="latency: rounds (5; quick 3)")
    p.add_argument("--latency-seconds", type=float,
                   help="latency: seconds per contender and round (6; quick 3)")
    p.add_argument("--workers", default="1,2", help="scaling: worker counts (1,2)")
    p.add_argument("--instruction-cases", default="warm,limits",
                   help="instructions: any of warm, limits (both)")
    p.add_argument("--requests", type=int,
                   help="instructions: N, counted as N and 2N requests (2,000; quick 1,000)")
    p.add_argument("--profile-seconds", type=float, default=8.0, help="py-spy sampling time (8)")
    p.add_argument("--keys", type=int, help="scale: keys (1,000,000; quick 100,000)")
    p.add_argument("--lookups", type=int, help="scale: lookups per kind (5,000; quick 1,000)")
    p.add_argument("--deletions", type=int,
                   help="revocation: deletions per phase (100; quick 20)")
    p.add_argument("--output", type=Path, default=BENCH_DIR / "results",
                   help="where the JSON (and the profile, the callgrind dumps) go")
    p.add_argument("--no-pin", action="store_true",
                   help="run everything on any CPU (pinning needs 2+ CPUs and is the default)")
    p.add_argument("--no-setup", action="store_true",
                   help="don't run bench/setup.sh (tools already installed)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (server logs)")
    return p


def _run_setup(parts: Sequence[str]) -> None:
    tools = ["wrk", "h2load", "taskset"] + (["valgrind"] if "instructions" in parts else [])
    if all(shutil.which(tool) for tool in tools) and (
            shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        return
    subprocess.run(["bash", str(BENCH_DIR / "setup.sh")], check=True)


def _output(argv: Sequence[str]) -> str:
    """The first line a command prints (some tools print their version on stderr)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    if done.returncode != 0 and argv[0] == "git":
        return "?"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else ""


def _load_average() -> list[float]:
    with contextlib.suppress(OSError, ValueError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return []


def _meta(args: argparse.Namespace, stores_origin: str, cpus: CpuPlan) -> dict[str, Any]:
    commit = _output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no",
                     "--", "gateway"])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": "make bench" + (f" BENCH_ARGS='{' '.join(sys.argv[1:])}'"
                                   if sys.argv[1:] else ""),
        "commit": commit + ("+changes" if dirty not in ("", "?") else ""),
        "cpus": os.cpu_count(), "pinning": cpus.describe() if cpus.pinned else "not pinned",
        "python": platform.python_version(), "stores": stores_origin,
        "tools": {"wrk": _output(["wrk", "-v"]), "h2load": _output(["h2load", "--version"]),
                  "nginx": _output([shutil.which("nginx") or "/usr/sbin/nginx", "-v"])},
        "quick": args.quick,
        "load_average": {"start": _load_average()},
    }


def _streams(say: Callable[[str], None], offered: dict[str, Any]) -> Any:
    """bench/streams.py's `run`, given those of `offered` it names, when the module exists."""
    try:
        import bench.streams as streams  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name != "bench.streams":
            raise
        say("streams: bench/streams.py not present")
        return None
    run: Callable[..., Any] = streams.run
    parameters = inspect.signature(run).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return run(**offered)
    return run(**{name: value for name, value in offered.items() if name in parameters})


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    cases = [c.strip() for c in args.instruction_cases.split(",") if c.strip()]
    for kind, given, known in (("part", parts, PARTS), ("contender", contenders, CONTENDERS),
                               ("instruction case", cases, ("warm", "limits"))):
        unknown = [x for x in given if x not in known]
        if unknown:
            print(f"unknown {kind}(s): {', '.join(unknown)}; known: {', '.join(known)}",
                  file=sys.stderr)
            return 2
    try:
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        print(f"--workers takes numbers like 1,2, not {args.workers!r}", file=sys.stderr)
        return 2
    quick = args.quick
    cpus = CpuPlan.of_this_process(pinned=not args.no_pin)
    if not args.no_pin and not cpus.pinned:
        print("pinning needs 2 CPUs or more: running unpinned (--no-pin)", file=sys.stderr)
    peak_plan = PeakPlan(rounds=args.rounds or (3 if quick else 5),
                         seconds=args.seconds or (2.0 if quick else 5.0),
                         warmup=1.0 if quick else 2.0, connections=args.connections)
    latency_plan = LatencyPlan(rate=args.rate, clients=args.rate_clients,
                               rounds=args.latency_rounds or (3 if quick else 5),
                               seconds=args.latency_seconds or (3.0 if quick else 6.0))
    # `make bench` stopped by SIGTERM still stops its servers and drops its database.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    if not args.no_setup:
        _run_setup(parts)
    every_cpu = os.sched_getaffinity(0)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="keygate-bench-"))
    # The library's own warnings (e.g. Redis down on purpose) go to the work folder's log.
    logging.basicConfig(filename=workdir / "bench.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    secrets_ = Secrets.fresh()
    started = time.monotonic()
    data: dict[str, Any] = {}
    ok = False
    _say(f"work folder: {workdir}")
    stores = open_stores(workdir)
    try:
        data["meta"] = _meta(args, stores.origin, cpus)
        _say(f"CPUs: {data['meta']['pinning']}; load average {data['meta']['load_average']}")
        upstream = Nginx.upstream(workdir / "nginx-upstream", cpus=cpus.load)
        stage = Stage(workdir, upstream, stores.database_url, stores.redis_url, secrets_,
                      cpus, _say)
        if cpus.load is not None:  # this process waits on the load generator: beside it
            os.sched_setaffinity(0, cpus.load)
        try:
            if "peak" in parts:
                _say(f"peak: {', '.join(contenders)}")
                runs = run_peak(stage, contenders, peak_plan)
                data["peak"] = peak_section(runs, {**asdict(peak_plan),
                                                   "cpus": cpus.describe()})
            if "latency" in parts:
                _say(f"latency: {latency_plan.rate:.0f} req/s, {', '.join(contenders)}")
                rates = run_latency(stage, contenders, latency_plan)
                signs = busy_signs(rates)
                for sign in signs:
                    _say(f"  ! {sign}")
                data["latency"] = latency_section(rates, LABELS, signs, {
                    **asdict(latency_plan), "cpus": cpus.describe()})
            if "scaling" in parts:
                _say(f"scaling: the gateway with rate limits, workers {args.workers}")
                scaling = run_scaling(stage, workers, peak_plan)
                data["scaling"] = scaling_section(scaling, {w: cpus.describe(w)
                                                            for w in workers})
            if "profile" in parts:
                data["profile"] = _profile(args, stage, stamp)
            stage.stop()
            os.sched_setaffinity(0, every_cpu)  # the other parts run anywhere
            if "instructions" in parts:
                data["instructions"] = _instructions(args, stage, cases, stamp)
            if "scale" in parts:
                from bench.scale import run_scale

                data["scale"] = run_scale(
                    stores.database_url, stores.redis_url,
                    keys=args.keys or (100_000 if quick else 1_000_000),
                    lookups=args.lookups or (1000 if quick else 5000), concurrency=16,
                    say=_say)
            if "revocation" in parts:
                from bench.revocation import run_revocation

                data["revocation"] = run_revocation(
                    workdir, stores.database_url, upstream.url, secrets_,
                    deletions=args.deletions or (20 if quick else 100), say=_say)
            if "streams" in parts:
                result = _streams(_say, {
                    "workdir": workdir, "database_url": stores.database_url,
                    "redis_url": stores.redis_url, "upstream_url": upstream.url,
                    "secrets_": secrets_, "quick": quick, "say": _say, "cpus": cpus})
                if result is not None:
                    data["streams"] = result
        finally:
            stage.stop()
            upstream.stop()
        ok = True
    finally:
        stop_all()
        stores.close()
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not ok:
            _say(f"failed: server logs are in {workdir}")
    data["meta"]["load_average"]["end"] = _load_average()
    data["targets"] = check_targets(data)
    data["meta"]["seconds"] = round(time.monotonic() - started)
    path = save(data, args.output, stamp)
    _say("")
    _say(render(data))
    _say(f"\nsaved {path} ({data['meta']['seconds']} s)")
    return 0


def _instructions(args: argparse.Namespace, stage: Stage, cases: Sequence[str],
                  stamp: str) -> list[dict[str, Any]]:
    from bench.instructions import callgrind_available, count_instructions

    if not callgrind_available():
        raise RuntimeError("valgrind is not installed (bench/setup.sh installs it)")
    stage.token_file()
    results = []
    for case in cases:
        count = count_instructions(
            case, stage.workdir / "callgrind", token=stage.tokens[0],
            database_url=stage.database_url, redis_url=stage.redis_url,
            upstream_url=stage.upstream.url, secrets_=stage.secrets_,
            requests=args.requests or (1000 if args.quick else 2000), say=_say)
        # The dump of the 2N requests, for callgrind_annotate; the work folder goes.
        kept = args.output / f"callgrind-{case}-{stamp}.out"
        args.output.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(count.callgrind_file, kept)
        results.append(dataclasses.replace(count, callgrind_file=str(kept)).as_dict())
    return results


def _profile(args: argparse.Namespace, stage: Stage, stamp: str) -> dict[str, Any]:
    from bench.profile import profile_under_load

    _say("profile: the gateway with rate limits (1 worker) under wrk, sampled by py-spy")
    gateway = stage.gateway("gateway-profiled", rate_limits=True)
    try:
        args.output.mkdir(parents=True, exist_ok=True)
        profile = profile_under_load(
            gateway.pid, gateway.url + PRIVATE_PATH, args.output / f"profile-{stamp}",
            duration=args.profile_seconds, connections=args.connections,
            headers=stage.headers, cpus=stage.cpus.load)
    finally:
        with contextlib.suppress(Exception):
            gateway.stop()
    _say(profile.render(15))
    return profile.as_dict()


if __name__ == "__main__":
    raise SystemExit(main())
