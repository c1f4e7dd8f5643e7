"""What a gateway asks Redis per request, in round trips.

Counted with MONITOR, on a short light load, keeping only the commands that name the
gateway's own key prefix (so other users of a shared Redis do not count) and were sent by a
client: Redis also shows the commands a Lua script runs, which are no round trips.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlsplit

__all__ = ["RoundTripMonitor"]


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
