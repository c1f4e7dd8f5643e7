"""`make bench`: every benchmark in one run, a table at the end, JSON under bench/results/.

    python -m bench.run                  # everything, about 13 minutes
    python -m bench.run --quick          # short runs and 100,000 keys, about 4 minutes
    python -m bench.run --parts throughput --workers 1

See bench/README.md for what each part measures and how to read the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.gateways import BENCH_DIR, PRIVATE_PATH, GatewayProcess, Secrets, issue_key
from bench.nginx import Nginx
from bench.procs import ROOT, stop_all
from bench.report import check_targets, render, save, throughput_rows
from bench.services import open_stores
from bench.throughput import LoadPlan, run_throughput

__all__ = ["main"]

PARTS = ("throughput", "instructions", "profile", "scale", "revocation")


def _say(message: str) -> None:
    print(message, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short runs (3 s per case), 100,000 keys, 20 deletions")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated, any of {', '.join(PARTS)} (default: all)")
    p.add_argument("--workers", default="1,2", help="worker counts to measure (default 1,2)")
    p.add_argument("--duration", type=float, help="seconds per case and worker count "
                                                  "(default 15, quick 3)")
    p.add_argument("--rounds", type=int, help="interleaved rounds per case (default 5, quick 1)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--rate-clients", type=int, default=64,
                   help="h2load connections at the fixed rate (64)")
    p.add_argument("--keys", type=int, help="keys for the scale run (1,000,000; quick 100,000)")
    p.add_argument("--lookups", type=int, help="lookups per kind in the scale run "
                                               "(5,000; quick 1,000)")
    p.add_argument("--deletions", type=int, help="deletions per phase of the revocation run "
                                                 "(100; quick 20)")
    p.add_argument("--requests", type=int,
                   help="requests per server counted under callgrind (2,000; quick 500)")
    p.add_argument("--profile-seconds", type=float, default=8.0, help="py-spy sampling time (8)")
    p.add_argument("--output", type=Path, default=BENCH_DIR / "results",
                   help="where the JSON (and the profile) go (bench/results)")
    p.add_argument("--no-setup", action="store_true",
                   help="don't run bench/setup.sh (tools already installed)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (server logs)")
    p.add_argument("--pin", action="store_true",
                   help="throughput: 1-worker servers on CPU 0, load generators and the "
                        "upstream on the other CPUs (steadier figures; needs 2+ CPUs)")
    return p


def _run_setup() -> None:
    if all(shutil.which(tool) for tool in ("wrk", "h2load", "valgrind")) and (
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


def _meta(args: argparse.Namespace, stores_origin: str, plan: LoadPlan | None) -> dict[str, Any]:
    import aiohttp

    commit = _output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no",
                     "--", "gateway"])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": "make bench" + (f" BENCH_ARGS='{' '.join(sys.argv[1:])}'"
                                   if sys.argv[1:] else ""),
        "commit": commit + ("+changes" if dirty not in ("", "?") else ""),
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "aiohttp": aiohttp.__version__, "stores": stores_origin,
        "tools": {"wrk": _output(["wrk", "-v"]), "h2load": _output(["h2load", "--version"]),
                  "nginx": _output(["nginx", "-v"])},
        "plan": plan.__dict__ if plan else None,
        "quick": args.quick,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"unknown part(s): {', '.join(unknown)}; known: {', '.join(PARTS)}",
              file=sys.stderr)
        return 2
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    quick = args.quick
    plan = LoadPlan(
        duration=args.duration or (3.0 if quick else 15.0),
        warmup=1.0 if quick else 2.0,
        connections=args.connections,
        rate_clients=args.rate_clients,
        rounds=args.rounds or (1 if quick else 5),
        pin=args.pin,
    )
    if args.pin and (os.cpu_count() or 1) < 2:
        print("--pin needs at least 2 CPUs", file=sys.stderr)
        return 2
    every_cpu = os.sched_getaffinity(0)
    if args.pin:  # inherited by the upstream and the load generators started from here
        os.sched_setaffinity(0, every_cpu - {0})
    # `make bench` stopped by SIGTERM still stops its servers and drops its database.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    if not args.no_setup:
        _run_setup()
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
        data["meta"] = _meta(args, stores.origin,
                             plan if "throughput" in parts else None)
        upstream = Nginx.upstream(workdir / "nginx-upstream")
        try:
            if "throughput" in parts:
                results = run_throughput(workers, plan, workdir, upstream, stores.database_url,
                                         stores.redis_url, secrets_, _say)
                os.sched_setaffinity(0, every_cpu)  # the other parts start servers unpinned
                data["throughput"] = throughput_rows(results)
            if "instructions" in parts:
                data["instructions"] = _instructions(args, workdir, upstream, stores.database_url,
                                                     stores.redis_url, secrets_)
            if "profile" in parts:
                data["profile"] = _profile(args, workdir, upstream, stores.database_url,
                                           stores.redis_url, secrets_, stamp)
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
        finally:
            upstream.stop()
        ok = True
    finally:
        stop_all()
        stores.close()
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not ok:
            _say(f"failed: server logs are in {workdir}")
    data["targets"] = check_targets(data)
    data["meta"]["seconds"] = round(time.monotonic() - started)
    path = save(data, args.output, stamp)
    _say("")
    _say(render(data))
    _say(f"\nsaved {path} ({data['meta']['seconds']} s)")
    return 0


def _instructions(args: argparse.Namespace, workdir: Path, upstream: Nginx, database_url: str,
                  redis_url: str, secrets_: Secrets) -> list[dict[str, Any]]:
    from bench.instructions import callgrind_available, run_instructions

    if not callgrind_available():
        raise RuntimeError("valgrind is not installed (bench/setup.sh installs it)")
    token = asyncio.run(issue_key(database_url, secrets_))
    counts = run_instructions(workdir, upstream.url, database_url, redis_url, secrets_, token,
                              requests=args.requests or (500 if args.quick else 2000),
                              idle=2.0 if args.quick else 5.0, say=_say)
    return [count.as_dict() for count in counts]


def _profile(args: argparse.Namespace, workdir: Path, upstream: Nginx, database_url: str,
             redis_url: str, secrets_: Secrets, stamp: str) -> dict[str, Any]:
    from bench.profile import profile_under_load

    _say("profile: the warm gateway, 1 worker, under wrk, sampled by py-spy")
    token = asyncio.run(issue_key(database_url, secrets_))
    gateway = GatewayProcess("gateway-profiled", workdir, database_url=database_url,
                             redis_url=redis_url, upstream_url=upstream.url, secrets_=secrets_)
    try:
        args.output.mkdir(parents=True, exist_ok=True)
        profile = profile_under_load(
            gateway.pid, gateway.url + PRIVATE_PATH, args.output / f"profile-{stamp}",
            duration=args.profile_seconds, connections=args.connections,
            headers={"Authorization": f"Bearer {token}"})
    finally:
        with contextlib.suppress(Exception):
            gateway.stop()
    _say(profile.render(15))
    return profile.as_dict()


if __name__ == "__main__":
    raise SystemExit(main())
