"""Settings: `config/gateway.yaml` overridden by `GATEWAY_*` variables, read once, frozen.

This is the only module that reads `os.environ`. Every problem is collected and reported
together, each naming the setting and its bad value.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["Network", "Settings", "SettingsError", "load_settings", "parse_duration"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|k|mb|m|gb|g)?\s*$", re.IGNORECASE)
_UNIT_BYTES = {"b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2,
               "g": 1024**3, "gb": 1024**3}

DEFAULT_CONFIG = Path("config/gateway.yaml")


class SettingsError(Exception):
    """Settings could not be loaded; `problems` lists one line per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable. Durations are seconds, sizes are bytes."""

    config_path: Path | None = None
    database_url: str | None = None
    redis_url: str | None = None
    upstream_url: str | None = None
    routes_path: Path = Path("config/routes.yaml")
    secret_key: str | None = None
    key_pepper: str | None = None
    # Older peppers by hash version, so stored hashes stay valid while the pepper rotates.
    old_key_peppers: Mapping[int, str] = dataclasses.field(default_factory=dict)
    key_pepper_version: int = 1
    smtp_url: str | None = None
    admin_url: str = "http://127.0.0.1:8081"
    trusted_proxies: tuple[Network, ...] = ()
    data_dir: Path = Path(".keygate")
    rate_limits: bool = True
    redis_prefix: str = "keygate:"
    log_format: str = "text"
    # TLS termination in the process itself (leave unset behind a TLS load balancer).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    access_log: bool = True

    # Key cache.
    key_cache_ttl: float = 30.0
    key_cache_stale_ttl: float = 300.0
    key_cache_size: int = 100_000
    negative_cache_ttl: float = 5.0
    redis_key_ttl: float = 60.0
    tombstone_ttl: float = 3600.0
    last_used_flush_interval: float = 5.0
    store_timeout: float = 2.0

    # Upstream and client limits.
    upstream_connect_timeout: float = 5.0
    upstream_timeout: float = 30.0
    upstream_connections: int = 1000
    upstream_secret: str | None = None
    upstream_secret_header: str = "X-Gateway-Secret"  # noqa: S105 (a header name)
    max_body_size: int = 10 * 1024**2
    max_header_size: int = 8190
    client_timeout: float = 60.0  # a request must arrive this soon on an open connection
    max_connections: int = 10_000  # per process
    shutdown_timeout: float = 30.0

    # Abuse control.
    auth_fail_limit: int = 20
    auth_fail_window: float = 60.0
    ip_block_duration: float = 3600.0

    # Admin UI.
    confirm_link_ttl: float = 1800.0
    verify_link_ttl: float = 86400.0
    reset_link_ttl: float = 3600.0
    max_keys_per_user: int = 20
    session_ttl: float = 43200.0
    login_fail_limit: int = 10
    login_fail_window: float = 900.0
    # Sign-ups and password reset requests one client IP may make a window.
    signup_ip_limit: int = 5
    signup_ip_window: float = 3600.0
    forgot_ip_limit: int = 5
    forgot_ip_window: float = 3600.0
    audit_retention: float = 365 * 86400.0

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The server TLS context when a certificate is configured."""
        if self.tls_cert is None:
            return None
        from gateway.config.tls import TlsError, server_context

        try:
            return server_context(self.tls_cert, self.tls_key)
        except TlsError as exc:
            raise SettingsError([f"GATEWAY_TLS_CERT/GATEWAY_TLS_KEY: {exc}"]) from exc

    @property
    def is_embedded(self) -> bool:
        """True when PostgreSQL and Redis are the embedded ones under `data_dir`."""
        return self.database_url is None and self.redis_url is None

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests shorten durations this way)."""
        return dataclasses.replace(self, **changes)


# --- field parsers -----------------------------------------------------------------------


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as `250ms`, `30s`, `30m`, `1h`."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("negative duration")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError("not a duration (e.g. 30, 30s, 5m, 1h)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _parse_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError("not a size (e.g. 8192, 64kb, 10mb)")
    return int(match.group(1)) * _UNIT_BYTES[(match.group(2) or "b").lower()]


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("not on/off")


def _parse_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("not an integer")
    number = int(str(value))
    if number < 0:
        raise ValueError("negative")
    return number


def _parse_str(value: object) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("empty")
    return text


def _parse_url(*schemes: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _parse_str(value)
        scheme, sep, rest = text.partition("://")
        if not sep or scheme.lower() not in schemes or not rest:
            raise ValueError(f"not a URL with scheme {'/'.join(schemes)}")
        return text.rstrip("/") if scheme.lower().startswith("http") else text

    return parse


def _parse_networks(value: object) -> tuple[Network, ...]:
    items = value if isinstance(value, list) else str(value).replace(",", " ").split()
    return tuple(ipaddress.ip_network(str(item).strip(), strict=False) for item in items)


def _parse_peppers(value: object) -> dict[int, str]:
    if not isinstance(value, dict):
        raise ValueError("not a mapping of version -> pepper")
    return {int(k): _parse_str(v) for k, v in value.items()}


def _existing_file(value: object) -> Path:
    path = Path(_parse_str(value))
    if not path.is_file():
        raise ValueError("no such file")
    return path


def _parse_log_format(value: object) -> str:
    text = str(value).strip().lower()
    if text not in {"text", "json"}:
        raise ValueError("not text or json")
    return text


_PARSERS: dict[str, Callable[[object], Any]] = {
    "database_url": _parse_url("postgres", "postgresql"),
    "redis_url": _parse_url("redis", "rediss", "unix"),
    "upstream_url": _parse_url("http", "https"),
    "routes_path": lambda v: Path(_parse_str(v)),
    "secret_key": _parse_str,
    "key_pepper": _parse_str,
    "old_key_peppers": _parse_peppers,
    "key_pepper_version": _parse_int,
    "smtp_url": _parse_url("smtp", "smtps"),
    "admin_url": _parse_url("http", "https"),
    "trusted_proxies": _parse_networks,
    "data_dir": lambda v: Path(_parse_str(v)),
    "tls_cert": lambda v: _existing_file(v),
    "tls_key": lambda v: _existing_file(v),
    "rate_limits": _parse_bool,
    "redis_prefix": _parse_str,
    "log_format": _parse_log_format,
    "access_log": _parse_bool,
    "upstream_secret": _parse_str,
    "upstream_secret_header": _parse_str,
}
for _field in dataclasses.fields(Settings):
    if _field.name in _PARSERS:
        continue
    if _field.type == "float":
        _PARSERS[_field.name] = parse_duration
    elif _field.type == "int":
        _PARSERS[_field.name] = (
            _parse_size if _field.name.startswith("max_") and "size" in _field.name else _parse_int
        )

# The environment variables DESIGN.md names, plus a few of our own.
ENV_VARS: dict[str, str] = {
    "GATEWAY_DATABASE_URL": "database_url",
    "GATEWAY_REDIS_URL": "redis_url",
    "GATEWAY_UPSTREAM_URL": "upstream_url",
    "GATEWAY_ROUTES": "routes_path",
    "GATEWAY_SECRET_KEY": "secret_key",
    "GATEWAY_KEY_PEPPER": "key_pepper",
    "GATEWAY_SMTP_URL": "smtp_url",
    "GATEWAY_ADMIN_URL": "admin_url",
    "GATEWAY_TRUSTED_PROXIES": "trusted_proxies",
    "GATEWAY_DATA_DIR": "data_dir",
    "GATEWAY_RATE_LIMITS": "rate_limits",
    "GATEWAY_REDIS_PREFIX": "redis_prefix",
    "GATEWAY_LOG_FORMAT": "log_format",
    "GATEWAY_UPSTREAM_SECRET": "upstream_secret",
    "GATEWAY_ACCESS_LOG": "access_log",
    "GATEWAY_TLS_CERT": "tls_cert",
    "GATEWAY_TLS_KEY": "tls_key",
}


def load_settings(
    config_path: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build `Settings` from the YAML file (if any) and the environment; raise `SettingsError`."""
    env = os.environ if environ is None else environ
    path = config_path or Path(env.get("GATEWAY_CONFIG", "") or DEFAULT_CONFIG)
    problems: list[str] = []
    raw: dict[str, tuple[str, object]] = {}

    if path.is_file():
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SettingsError([f"{path}: not valid YAML: {exc}"]) from exc
        if not isinstance(document, dict):
            raise SettingsError([f"{path}: expected a mapping of settings"])
        known = {f.name for f in dataclasses.fields(Settings)} - {"config_path"}
        for name, value in document.items():
            if name not in known:
                problems.append(f"{path}: unknown setting '{name}'")
            elif value is not None:
                raw[name] = (f"{path}: {name}", value)
    elif config_path is not None or env.get("GATEWAY_CONFIG"):
        raise SettingsError([f"{path}: settings file not found"])

    for var, name in ENV_VARS.items():
        if env.get(var, "") != "":
            raw[name] = (var, env[var])

    values: dict[str, Any] = {"config_path": path if path.is_file() else None}
    for name, (origin, value) in raw.items():
        try:
            values[name] = _PARSERS[name](value)
        except (ValueError, TypeError) as exc:
            problems.append(f"{origin} has value {value!r}: {exc}")
    if problems:
        raise SettingsError(problems)
    settings = Settings(**values)
    if (settings.database_url is None) != (settings.redis_url is None):
        raise SettingsError(
            ["GATEWAY_DATABASE_URL and GATEWAY_REDIS_URL: set both, or neither for embedded mode"]
        )
    return settings
