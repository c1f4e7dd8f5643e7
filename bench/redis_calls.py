"""What a gateway asks Redis per request: commands executed, and round trips.

Redis counts the commands a Lua script runs as commands of their own (INFO commandstats shows
TIME, GET and SET beside each EVALSHA), so the round trips a request costs are counted
separately: with MONITOR, on a short light load, keeping only the commands that name the
gateway's own key prefix and were sent by a client (not run by a script).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlsplit

import redis

__all__ = ["CommandCounter", "RoundTripMonitor"]


class CommandCounter:
    """Commands the Redis server executed, by name (INFO commandstats), between two reads."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)

    def read(self) -> dict[str, int]:
        stats = self._client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(value["calls"])
                for name, value in stats.items()}

    def calls_since(self, before: dict[str, int]) -> dict[str, int]:
        after = self.read()
        deltas = {name: calls - before.get(name, 0) for name, calls in after.items()}
        deltas["info"] = deltas.get("info", 0) - 1  # our own INFO
        return {name: delta for name, delta in deltas.items() if delta > 0}

    def close(self) -> None:
        self._client.close()


class RoundTripMonitor:
    """Counts, with MONITOR, the commands clients send that mention `prefix`."""

    def __init__(self, url: str, prefix: str) -> None:
        self._url = url
        self._needle = prefix.encode()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.count = 0
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _connect(self) -> socket.socket:
        parts = urlsplit(self._url)
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(parts.path)
        else:
            sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
        return sock

    def _watch(self) -> None:
        with self._connect() as sock:
            sock.sendall(b"MONITOR\r\n")
            sock.settimeout(0.1)
            buffer = b""
            while not self._stop.is_set():
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    self._ready.set()
                    continue
                if not chunk:
                    break
                self._ready.set()
                buffer += chunk
                lines = buffer.split(b"\r\n")
                buffer = lines.pop()
                for line in lines:
                    # `+<time> [<db> <client>] "CMD" ...`; a script's own calls say `lua]`.
                    if self._needle in line and b" lua]" not in line:
                        self.count += 1

    def __enter__(self) -> RoundTripMonitor:
        self._thread.start()
        self._ready.wait(2.0)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)  # the last commands' lines are on their way
        self._stop.set()
        with contextlib.suppress(RuntimeError):
            self._thread.join(2.0)
