"""A real haproxy in front of gateway processes, as in `deploy/haproxy/haproxy.cfg`.

haproxy comes from Debian's package (`scripts/install-test-deps.sh`, run by `make test`).
A missing haproxy is an error, never a skip: the scale-out test is part of the suite.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.services import free_port

__all__ = ["Haproxy", "haproxy_binary"]

_CONFIG = """\
global
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend keygate
    bind 127.0.0.1:{port}
    # As deploy/haproxy/haproxy.cfg: the client's own X-Forwarded-* are dropped and
    # X-Forwarded-For is set to the client's address, never appended to; the gateways
    # trust this proxy only.
    http-request del-header X-Forwarded- -m beg
    http-request del-header Forwarded
    http-request set-header X-Forwarded-For %[src]
    # Stands in for TLS termination at the balancer (deploy/ uses `if {{ ssl_fc }}`).
    http-request set-header X-Forwarded-Proto https
    default_backend gateways

backend gateways
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
{servers}
"""


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError(
            "haproxy is not installed: run scripts/install-test-deps.sh (make test does), "
            "or install Debian's haproxy package")
    return found


class Haproxy:
    """haproxy on a free loopback port, balancing over `backends` (ports on 127.0.0.1)."""

    def __init__(self, backends: Sequence[int]) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="keygate-haproxy-"))
        servers = "\n".join(
            f"    server gw{i} 127.0.0.1:{port} check inter 500ms fall 2 rise 1"
            for i, port in enumerate(backends, 1))
        self.config = self.folder / "haproxy.cfg"
        self.config.write_text(_CONFIG.format(port=self.port, servers=servers))
        self._log = (self.folder / "haproxy.log").open("wb")
        binary = haproxy_binary()
        checked = subprocess.run([binary, "-c", "-q", "-f", str(self.config)],
                                 capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            raise RuntimeError(f"haproxy refused its config:\n{checked.stderr}")
        # -db: stay in the foreground, so this process is haproxy itself.
        self.process = subprocess.Popen([binary, "-db", "-f", str(self.config)],
                                        stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_listening()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.process.returncode}:\n"
                                   f"{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("haproxy did not start listening")

    def output(self) -> str:
        return (self.folder / "haproxy.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        shutil.rmtree(self.folder, ignore_errors=True)
