"""Instructions per request of the edge's request path, counted by callgrind.

Requests/s and CPU time on a small shared machine move from one run to the next; the
instructions one request takes do not. bench/edge_driver.py runs the real edge in one
process on fake transports (no socket, no other process); here it runs under
`valgrind --tool=callgrind`, driven over a pipe, and counted only while measured:

1. started with instrumentation off, warmed up (the key looked up once, then warm);
2. counters zeroed, N requests, counters dumped; then the same with 2N requests;
3. per request = (count of 2N - count of N) / N: what the pipe's command and reply cost
   (the same in both) cancels out.

User-space instructions only (system calls are the kernel's), and not a speed: an
instruction may hit or miss the caches. It tells whether a change made the request path do
less, in a figure that repeats to a few instructions per request, so a small change of the
edge can be compared before and after.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.gateways import Secrets, gateway_env
from bench.procs import ROOT

__all__ = ["CASES", "InstructionCount", "callgrind_available", "count_instructions"]

CASES: dict[str, str] = {
    "warm": "warm key, rate limits off (no event loop turn)",
    "limits": "rate limits on (event loop and Redis client included)",
}
_DUMP_WAIT = 60.0


@dataclass(frozen=True)
class InstructionCount:
    case: str
    requests: int  # N: the difference between the two counted runs
    per_request: float
    counts: tuple[int, int]  # of N and of 2N requests
    seconds: float  # how long the 2N requests took under valgrind
    callgrind_file: str  # the dump of the 2N run, for callgrind_annotate

    def as_dict(self) -> dict[str, object]:
        return {"case": self.case, "label": CASES[self.case], "requests": self.requests,
                "per_request": round(self.per_request), "counts": list(self.counts),
                "seconds": round(self.seconds, 1), "callgrind_file": self.callgrind_file}


def callgrind_available() -> bool:
    return all(shutil.which(tool) for tool in ("valgrind", "callgrind_control"))


class _Counted:
    """The edge driver under callgrind, its counters worked by `callgrind_control`."""

    def __init__(self, case: str, token: str, env: dict[str, str], folder: Path) -> None:
        self.out = folder / f"callgrind-{case}"
        self.case = case
        self.folder = folder
        self._errors = (folder / f"{case}.err").open("w")
        self.process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", "-q",
             f"--callgrind-out-file={self.out}.%p", sys.executable, "-m", "bench.edge_driver",
             "--case", case, "--token", token, "--log", str(folder / f"access-{case}.log")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors, text=True,
            env=env, cwd=ROOT)

    @property
    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        return self.process.stdin, self.process.stdout

    def _reply(self, expected: str) -> None:
        line = self._pipes[1].readline().strip()
        if line != expected:
            self.process.wait(30)
            error = (self.folder / f"{self.case}.err").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the edge driver said {line!r}, not {expected!r}:\n{error}")

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.process.pid)], check=True,
                       capture_output=True, timeout=60)

    def ready(self) -> None:
        self._reply("ready")
        self._control("--instr=on")

    def count(self, requests: int) -> tuple[int, float, Path]:
        """Instructions `requests` requests took (with one command and reply), the time they
        took, and the dump holding them."""
        self._control("--zero")
        stdin, _ = self._pipes
        started = time.monotonic()
        stdin.write(f"run {requests}\n")
        stdin.flush()
        self._reply(f"done {requests}")
        seconds = time.monotonic() - started
        before = set(self.folder.glob(f"{self.out.name}.*"))
        self._control("--dump")
        deadline = time.monotonic() + _DUMP_WAIT
        while time.monotonic() < deadline:
            for dump in set(self.folder.glob(f"{self.out.name}.*")) - before:
                match = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.M)
                if match:
                    return int(match.group(1)), seconds, dump
            time.sleep(0.2)
        raise RuntimeError("callgrind wrote no dump of the edge driver")

    def stop(self) -> None:
        self._stop()
        self._errors.close()

    def _stop(self) -> None:
        if self.process.poll() is None:
            stdin, _ = self._pipes
            try:
                stdin.write("quit\n")
                stdin.flush()
                self.process.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def count_instructions(case: str, folder: Path, *, token: str, database_url: str,
                       redis_url: str, upstream_url: str, secrets_: Secrets, requests: int,
                       say: Callable[[str], None]) -> InstructionCount:
    """Instructions per request of `case` (see `CASES`), from N and 2N requests counted."""
    folder.mkdir(parents=True, exist_ok=True)
    env = gateway_env(database_url=database_url, redis_url=redis_url,
                      upstream_url=upstream_url, secrets_=secrets_,
                      rate_limits=case == "limits", redis_prefix=f"kgbench:{secrets.token_hex(6)}:")
    env["PYTHONHASHSEED"] = "0"  # the same dict and set layouts every run
    say(f"instructions: {CASES[case]}, {requests:,} then {2 * requests:,} requests "
        "under callgrind")
    counted = _Counted(case, token, env, folder)
    try:
        counted.ready()
        single, _, _ = counted.count(requests)
        double, seconds, dump = counted.count(2 * requests)
    finally:
        counted.stop()
    result = InstructionCount(case, requests, (double - single) / requests, (single, double),
                              seconds, str(dump))
    say(f"  {result.per_request:,.0f} instructions per request "
        f"({single:,} for {requests:,}, {double:,} for {2 * requests:,})")
    return result
