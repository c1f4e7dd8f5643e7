"""Gateways as real processes (`gateway serve`), and keys issued the way ops issue them."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.procs import ROOT, Child, Server, free_port, wait_http
from gateway.keys.accounts import create_user
from gateway.keys.lifecycle import activate_key, create_key

__all__ = ["BENCH_DIR", "PRIVATE_PATH", "PUBLIC_PATH", "GatewayProcess", "Secrets",
           "gateway_env", "issue_key", "issue_keys", "new_key", "new_user"]

BENCH_DIR = Path(__file__).resolve().parent
PRIVATE_PATH = "/public/v1/account/balances"  # needs a key with `read`
PUBLIC_PATH = "/public/v1/time"


@dataclass(frozen=True)
class Secrets:
    """The run's own secrets: what `gateway serve` requires, and the pepper keys are hashed with."""

    secret_key: str
    key_pepper: str

    @classmethod
    def fresh(cls) -> Secrets:
        return cls(secrets.token_urlsafe(32), secrets.token_urlsafe(32))


class GatewayProcess(Server):
    """`gateway serve --workers N` on free loopback ports, with the benchmark's settings."""

    stop_timeout = 40.0  # a graceful drain first

    def __init__(self, name: str, workdir: Path, *, database_url: str, redis_url: str,
                 upstream_url: str, secrets_: Secrets, workers: int = 1,
                 config: str = "gateway.yaml", rate_limits: bool = False,
                 redis_prefix: str | None = None,
                 cpus: Collection[int] | None = None) -> None:
        """`cpus`: the only CPUs it and its workers may run on; None: any."""
        self.name = name
        self.workers = workers
        self.port = free_port()
        self.status_port = free_port()
        # Gateways of one cluster share a prefix (the invalidation channel is under it).
        self.redis_prefix = redis_prefix or f"kgbench:{secrets.token_hex(6)}:"
        env = gateway_env(database_url=database_url, redis_url=redis_url,
                          upstream_url=upstream_url, secrets_=secrets_, config=config,
                          rate_limits=rate_limits, redis_prefix=self.redis_prefix)
        argv: Sequence[str] = [
            sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1",
            "--port", str(self.port), "--status-port", str(self.status_port),
            "--workers", str(workers),
        ]
        self.child = Child(name, argv, workdir / f"{name}.log", env=env, cpus=cpus)
        wait_http(f"{self.url}/healthz", timeout=60, child=self.child)

    @property
    def pid(self) -> int:
        return self.child.pid

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the forked workers, or the process itself."""
        return self.child.children() or [self.child.pid]


def gateway_env(*, database_url: str, redis_url: str, upstream_url: str, secrets_: Secrets,
                config: str = "gateway.yaml", rate_limits: bool = False,
                redis_prefix: str) -> dict[str, str]:
    """This environment without its GATEWAY_* variables, plus the benchmark's settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GATEWAY_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({
        "GATEWAY_CONFIG": str(BENCH_DIR / config),
        "GATEWAY_ROUTES": str(BENCH_DIR / "routes.yaml"),
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_UPSTREAM_URL": upstream_url,
        "GATEWAY_SECRET_KEY": secrets_.secret_key,
        "GATEWAY_KEY_PEPPER": secrets_.key_pepper,
        "GATEWAY_RATE_LIMITS": "on" if rate_limits else "off",
        "GATEWAY_REDIS_PREFIX": redis_prefix,
        "PYTHONPATH": str(ROOT),
    })
    return env


async def new_user(conn: asyncpg.Connection) -> int:
    return await create_user(conn, f"bench-{secrets.token_hex(6)}@example.com",
                             secrets.token_urlsafe(16), verified=True)


async def new_key(conn: asyncpg.Connection, user_id: int, secrets_: Secrets,
                  permissions: Sequence[str] = ("read",)) -> tuple[str, str]:
    """(key_id, token) of a new active key, made as `gateway keys create` makes one."""
    key_id = await create_key(conn, user_id=user_id, name="bench", permissions=permissions,
                              allowed_ips=(), actor="bench")
    token = await activate_key(conn, key_id, pepper=secrets_.key_pepper, hash_version=1,
                               actor="bench")
    return key_id, token


async def issue_key(database_url: str, secrets_: Secrets) -> str:
    """The token of a new `read` key of a new user."""
    return (await issue_keys(database_url, secrets_, 1))[0]


async def issue_keys(database_url: str, secrets_: Secrets, count: int) -> list[str]:
    """Tokens of `count` new `read` keys of one new user."""
    conn = await asyncpg.connect(database_url)
    try:
        user_id = await new_user(conn)
        return [(await new_key(conn, user_id, secrets_))[1] for _ in range(count)]
    finally:
        await conn.close()
