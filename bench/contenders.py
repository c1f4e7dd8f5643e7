"""The contenders: what a request to the upstream can go through, each one process on its CPU.

* `direct`: wrk straight at the upstream (an nginx answering a small JSON body, on the load
  side's CPU): the ceiling the load side allows, which no proxy in front can pass;
* `nginx`: nginx `proxy_pass`, one worker, a keep-alive pool to the upstream, access log on;
* `gateway`: `gateway serve --workers 1` with the benchmark's settings (production defaults:
  JSON access log, metrics), rate limits off, the key in the process cache (warm);
* `gateway_cold`: the same with `key_cache_ttl: 0`, so every lookup asks Redis; wrk sends
  each request with the next of 1,000 keys (bench/tokens.lua);
* `gateway_limits`: rate limits on, limits so high nothing is refused: the full default
  pipeline (key, allowlist, permission, rate limit, metrics, access log).

Every contender gets the same request (the private route, with a key) and forwards the same
bytes to the same upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.cpus import CpuPlan
from bench.gateways import BENCH_DIR, PRIVATE_PATH, GatewayProcess, Secrets, issue_keys
from bench.nginx import Nginx
from bench.procs import Server

__all__ = ["COLD_KEYS", "LABELS", "Contender", "Stage"]

LABELS: dict[str, str] = {
    "direct": "direct to upstream",
    "nginx": "nginx proxy_pass",
    "gateway": "gateway, warm key",
    "gateway_cold": "gateway, cold key",
    "gateway_limits": "gateway, rate limits on",
}

COLD_KEYS = 1000  # the cold case's wrk sends each request with the next of these keys


@dataclass
class Contender:
    """One server under test, and how the load generator talks to it."""

    key: str
    server: Server
    script: tuple[Path, list[str]] | None = None  # a wrk Lua script and its arguments
    processes: int = 1  # serving processes (workers)

    @property
    def label(self) -> str:
        return LABELS.get(self.key, self.key)

    @property
    def url(self) -> str:
        return self.server.url + PRIVATE_PATH

    def cpu_seconds(self) -> float:
        return self.server.cpu_seconds()


@dataclass
class Stage:
    """What every part shares: the upstream, the stores, the keys, the CPU plan, and the
    contenders started so far (each once, stopped by `stop`)."""

    workdir: Path
    upstream: Nginx
    database_url: str
    redis_url: str
    secrets_: Secrets
    cpus: CpuPlan
    say: Callable[[str], None]
    tokens: list[str] = field(default_factory=list)
    _started: dict[str, Contender] = field(default_factory=dict)

    def token_file(self) -> Path:
        """`COLD_KEYS` active keys, one token a line; made on first use."""
        path = self.workdir / "tokens.txt"
        if not self.tokens:
            self.tokens = asyncio.run(issue_keys(self.database_url, self.secrets_, COLD_KEYS))
            path.write_text("\n".join(self.tokens) + "\n")
        return path

    @property
    def headers(self) -> dict[str, str]:
        """The warm key's header: every request but the cold case's carries it."""
        self.token_file()
        return {"Authorization": f"Bearer {self.tokens[0]}"}

    def contender(self, key: str) -> Contender:
        """The contender `key` of `LABELS`, started on first use."""
        found = self._started.get(key)
        if found is None:
            found = self._started[key] = self._start(key)
        return found

    def gateway(self, name: str, *, workers: int = 1, config: str = "gateway.yaml",
                rate_limits: bool = False) -> GatewayProcess:
        """A `gateway serve` of the benchmark's, on the contenders' CPUs."""
        return GatewayProcess(name, self.workdir, database_url=self.database_url,
                              redis_url=self.redis_url, upstream_url=self.upstream.url,
                              secrets_=self.secrets_, workers=workers, config=config,
                              rate_limits=rate_limits, cpus=self.cpus.contender(workers))

    def _start(self, key: str) -> Contender:
        self.say(f"  starting {LABELS[key]}")
        if key == "direct":
            return Contender(key, self.upstream)
        if key == "nginx":
            return Contender(key, Nginx.proxy(self.workdir / "nginx-proxy", 1,
                                              self.upstream.port, cpus=self.cpus.contender(1)))
        if key == "gateway":
            return Contender(key, self.gateway("gateway"))
        if key == "gateway_cold":
            return Contender(key, self.gateway("gateway-cold", config="gateway-cold.yaml"),
                             script=(BENCH_DIR / "tokens.lua", [str(self.token_file())]))
        if key == "gateway_limits":
            return Contender(key, self.gateway("gateway-limits", rate_limits=True))
        raise KeyError(key)

    def stop(self) -> None:
        """Stop every contender started (the upstream is the caller's)."""
        for key, contender in list(self._started.items()):
            if key != "direct":
                contender.server.stop()
            del self._started[key]
