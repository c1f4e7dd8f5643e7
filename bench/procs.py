"""Child processes of the benchmark: started in their own session, stopped by their id."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

__all__ = ["ROOT", "Child", "Server", "free_port", "on_cpus", "stop_all", "wait_http"]

ROOT = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def on_cpus(argv: Sequence[str], cpus: Collection[int] | None) -> list[str]:
    """`argv` run on `cpus` only (`taskset`), it and whatever it forks; as is for None."""
    if not cpus:
        return list(argv)
    return ["taskset", "-c", ",".join(str(cpu) for cpu in sorted(cpus)), *argv]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, child: Child | None = None) -> None:
    """Until `url` answers 2xx; raise with the child's log tail if it died or took too long
    (and stop the child: it is of no use)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (loopback)
                if 200 <= answer.status < 300:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if child is not None and not child.alive:
            child.stop()
            raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}")
        if time.monotonic() > deadline:
            tail = ""
            if child is not None:
                child.stop()
                tail = child.log_tail()
            raise RuntimeError(f"{url} did not answer within {timeout:.0f} s\n{tail}")
        time.sleep(0.1)


_LIVE: set[Child] = set()


def stop_all() -> None:
    """Stop every child still running (an interrupted or failed run)."""
    for child in list(_LIVE):
        child.stop(timeout=5)


class Child:
    """One server process (and whatever it forks), logging to a file."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, *,
                 env: Mapping[str, str] | None = None, cwd: Path = ROOT,
                 cpus: Collection[int] | None = None) -> None:
        """`cpus`: the only CPUs it (and what it forks) may run on; None: any."""
        self.name = name
        self.log = log
        self.cpus = sorted(cpus) if cpus else None
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                on_cpus(argv, cpus), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None, cwd=cwd,
                start_new_session=True,  # its own process group: stopped as a whole, by id
            )
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def children(self) -> list[int]:
        """Pids of the processes this one forked (workers), read from /proc."""
        found: list[int] = []
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                text = (task / "children").read_text()
                found.extend(int(pid) for pid in text.split())
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by this process and the ones it forked."""
        total = 0
        for pid in [self.pid, *self.children()]:
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / _CLOCK_TICKS

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to its process group, SIGKILL after `timeout`."""
        _LIVE.discard(self)
        if not self.alive:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL at once (a crash, not a shutdown)."""
        _LIVE.discard(self)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()


class Server:
    """A server the benchmark runs: one `Child` answering on a loopback port."""

    child: Child
    port: int
    redis_prefix: str | None = None  # the Redis key prefix it works under, if it uses Redis
    stop_timeout = 10.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        return self.child.cpu_seconds()

    def stop(self) -> None:
        self.child.stop(timeout=self.stop_timeout)
