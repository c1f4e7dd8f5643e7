"""Instructions per request, counted by callgrind: a figure that does not move between runs.

Requests/s on a small shared machine moves by 10% or more from one run to the next; the
instructions a server executes to answer one request do not. Each server runs under
`valgrind --tool=callgrind`, counting only while measured:

1. a warm-up (connections, key cache, lazily built state);
2. a few idle seconds, counted: what the process does by the clock (log flushes, metrics sync,
   connection sweeps), which valgrind's slowness would otherwise charge to the requests;
3. N requests one after another on one keep-alive connection: no batching of requests in one
   event-loop turn, so the count does not depend on timing either.

Per request = (count of step 3 - idle rate x its duration) / N. User-space instructions only:
system calls (the same sockets work for every proxy) are not counted, so the ratio of two
counts is stricter than a ratio of CPU times. Not a speed: an instruction may hit or miss the
caches. It tells whether a change made the gateway do less, without the machine's noise.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.bare_proxy import BareProxyProcess
from bench.gateways import PRIVATE_PATH, GatewayProcess, Secrets
from bench.procs import Server

__all__ = ["InstructionCount", "callgrind_available", "run_instructions"]

_DUMP_WAIT = 30.0


@dataclass(frozen=True)
class InstructionCount:
    case: str
    label: str
    requests: int
    per_request: float  # instructions, the idle rate's share removed
    idle_per_second: float
    seconds: float  # how long the counted requests took under valgrind

    def as_dict(self) -> dict[str, object]:
        return {"case": self.case, "label": self.label, "requests": self.requests,
                "per_request": round(self.per_request),
                "idle_per_second": round(self.idle_per_second),
                "seconds": round(self.seconds, 1)}


def callgrind_available() -> bool:
    return all(shutil.which(tool) for tool in ("valgrind", "callgrind_control"))


class _Counted:
    """One server process under callgrind, driven by `callgrind_control`."""

    def __init__(self, server: Server, out: Path) -> None:
        self.server = server
        self.pid = server.child.pid  # valgrind runs the interpreter in its own process
        self.out = out

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.pid)], check=True,
                       capture_output=True, timeout=60)

    def start(self) -> None:
        self._control("--instr=on")

    def zero(self) -> None:
        self._control("--zero")

    def count(self) -> int:
        """Instructions since the last zero (dumping zeroes the counters again)."""
        before = set(self.out.parent.glob(f"{self.out.name}.*"))
        self._control("--dump")
        deadline = time.monotonic() + _DUMP_WAIT
        while time.monotonic() < deadline:
            for dump in set(self.out.parent.glob(f"{self.out.name}.*")) - before:
                match = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.M)
                if match:
                    return int(match.group(1))
            time.sleep(0.1)
        raise RuntimeError(f"callgrind wrote no dump for {self.server.child.name}")


def _send(url: str, requests: int, headers: Mapping[str, str]) -> None:
    """`requests` GETs one after another on one keep-alive connection; all must succeed."""
    argv = ["h2load", "--h1", "-c", "1", "-m", "1", "-n", str(requests)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=False).stdout
    match = re.search(r"status codes: (\d+) 2xx", out)
    if not match or int(match.group(1)) != requests:
        raise RuntimeError(f"not every request succeeded:\n{out}")


def _measure(case: str, label: str, server: Server, out: Path, headers: Mapping[str, str],
             requests: int, idle: float) -> InstructionCount:
    counted = _Counted(server, out)
    url = server.url + PRIVATE_PATH
    counted.start()
    _send(url, 200, headers)
    counted.zero()
    time.sleep(idle)
    idle_rate = counted.count() / idle
    started = time.monotonic()
    _send(url, requests, headers)
    seconds = time.monotonic() - started
    total = counted.count()
    return InstructionCount(case, label, requests,
                            (total - idle_rate * seconds) / requests, idle_rate, seconds)


def run_instructions(workdir: Path, upstream_url: str, database_url: str, redis_url: str,
                     secrets_: Secrets, token: str, *, requests: int, idle: float,
                     say: Callable[[str], None]) -> list[InstructionCount]:
    """Bare proxy; the gateway warm, without access log, with a cold cache (every lookup
    asks Redis), with rate limits."""
    folder = workdir / "callgrind"
    folder.mkdir(exist_ok=True)

    def launcher(name: str) -> Sequence[str]:
        return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "-q",
                f"--callgrind-out-file={folder / name}.%p"]

    gateway_args = {"workdir": workdir, "database_url": database_url, "redis_url": redis_url,
                    "upstream_url": upstream_url, "secrets_": secrets_}
    cases: list[tuple[str, str, Callable[[], Server]]] = [
        ("bare", "bare aiohttp proxy",
         lambda: BareProxyProcess("bare-counted", workdir, upstream_url, 1,
                                  launcher=launcher("bare"))),
        ("gateway", "gateway, warm cache",
         lambda: GatewayProcess("gateway-counted", launcher=launcher("gateway"),
                                **gateway_args)),
        ("gateway_quiet", "gateway, access log off",
         lambda: GatewayProcess("gateway-quiet-counted", config="gateway-quiet.yaml",
                                launcher=launcher("gateway_quiet"), **gateway_args)),
        ("gateway_cold", "gateway, cold cache",
         lambda: GatewayProcess("gateway-cold-counted", config="gateway-cold.yaml",
                                launcher=launcher("gateway_cold"), **gateway_args)),
        ("gateway_limits", "gateway, rate limits on",
         lambda: GatewayProcess("gateway-limits-counted", rate_limits=True,
                                launcher=launcher("gateway_limits"), **gateway_args)),
    ]
    headers = {"Authorization": f"Bearer {token}"}  # the bare proxy gets it too, as at peak
    results: list[InstructionCount] = []
    for case, label, start in cases:
        say(f"instructions: {label}, {requests:,} requests under callgrind")
        server = start()
        try:
            result = _measure(case, label, server, folder / f"{case}.{server.child.pid}",
                              headers, requests, idle)
        finally:
            server.stop()
        say(f"  {result.per_request:,.0f} instructions per request")
        results.append(result)
    return results
