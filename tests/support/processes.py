"""A real `gateway serve` process, for tests that need a second process."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from gateway.config.settings import Settings
from tests.support.services import free_port

__all__ = ["GatewayProcess", "environment_for"]


def environment_for(settings: Settings) -> dict[str, str]:
    """The GATEWAY_* variables that make a process see `settings`' stores and secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({
        "GATEWAY_DATABASE_URL": settings.database_url or "",
        "GATEWAY_REDIS_URL": settings.redis_url or "",
        "GATEWAY_SECRET_KEY": settings.secret_key or "",
        "GATEWAY_KEY_PEPPER": settings.key_pepper or "",
        "GATEWAY_ROUTES": str(settings.routes_path),
        "GATEWAY_REDIS_PREFIX": settings.redis_prefix,
        "GATEWAY_RATE_LIMITS": "on" if settings.rate_limits else "off",
        "GATEWAY_CONFIG": str(Path(__file__).parent / "no-settings.yaml"),
    })
    if settings.upstream_url:
        env["GATEWAY_UPSTREAM_URL"] = settings.upstream_url
    return env


class GatewayProcess:
    """`gateway serve` on free ports; `stop()` sends SIGTERM and waits."""

    def __init__(self, settings: Settings, workers: int = 1,
                 extra_env: dict[str, str] | None = None, scheme: str = "http") -> None:
        self.scheme = scheme
        self.port = free_port()
        self.status_port = free_port()
        env = environment_for(settings) | (extra_env or {})
        # A file, not a pipe: a chatty process must never block on a full pipe.
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--status-port", str(self.status_port),
             "--workers", str(workers)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers form a group we can always kill
        )
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.output()
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{output}")
            try:
                # Alive is all we ask here; tests check certificates themselves.
                insecure = ssl._create_unverified_context()  # noqa: S323
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1,
                                            context=insecure) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("gateway did not become healthy")

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self) -> str:
        """Stop it and return what it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # no worker may outlive a test
        return self.output()
