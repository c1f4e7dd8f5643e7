"""Settings: `config/gateway.yaml` overridden by `GATEWAY_*` variables, read once, frozen.

This is the only module that reads `os.environ`. Every problem is collected and reported
together, each naming the setting and its bad value; a secret's value is never repeated, and a
URL is repeated with its password replaced by `***`.
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
from urllib.parse import urlsplit

import yaml

__all__ = ["ENV_VARS", "Network", "Settings", "SettingsError", "load_settings",
           "parse_duration", "redact_url", "settings_warnings"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|k|mb|m|gb|g)?\s*$", re.IGNORECASE)
_UNIT_BYTES = {"b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2,
               "g": 1024**3, "gb": 1024**3}

DEFAULT_CONFIG = Path("config/gateway.yaml")
# Shorter than this is a password, not a key: HMAC and session keys need entropy.
MIN_SECRET_LENGTH = 16
_HOST = re.compile(r"^[A-Za-z0-9_.-]+$")


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
    # How long a process may spend its lease of a counter's budget (0: ask Redis each time).
    rate_limit_lease_ttl: float = 0.5
    redis_prefix: str = "keygate:"
    log_format: str = "text"
    # TLS termination in the process itself (leave unset behind a TLS load balancer).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The authorities an https upstream's certificate is checked against (default: the
    # system's).
    upstream_ca_file: Path | None = None
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
    upstream_total_timeout: float = 120.0  # from the request's start to its answer's end
    max_body_size: int = 10 * 1024**2
    max_header_size: int = 8190
    max_header_count: int = 100
    client_timeout: float = 60.0  # keep-alive: the next request must start this soon
    client_header_timeout: float = 10.0  # a request's head must arrive within this
    client_body_timeout: float = 30.0  # and its body within this, once the head is in
    client_linger_timeout: float = 2.0  # after the last answer, the client's bytes dropped
    max_pipelined: int = 16  # requests read ahead on one connection before reading stops
    max_connections: int = 10_000  # per process
    max_connections_per_ip: int = 256  # per process and client address; proxies exempt
    shutdown_timeout: float = 30.0

    # Streams (WebSocket): the upstream overriding the route file's default, and the bounds
    # of every session.
    stream_upstream_url: str | None = None
    stream_max_message_size: int = 1024**2  # larger is refused with close 1009, both ways
    stream_messages_per_second: float = 50.0  # a client's messages, per session (burst: 1 s)
    stream_max_sessions_per_key: int = 10  # per process
    stream_max_sessions_per_ip: int = 50  # per process and client address (as proxies name it)
    stream_idle_timeout: float = 60.0  # pinged at half of it; silent this long: closed
    stream_send_buffer: int = 1024**2  # past it, reading the upstream pauses
    stream_send_timeout: float = 10.0  # a client whose buffer stays full this long is cut

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

    # Key lifecycle.
    withdraw_address_cooldown: float = 86400.0  # before an address added to a live key works
    usage_retention: float = 30 * 86400.0  # hourly usage counts per key are kept this long

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
    if isinstance(value, list | dict):
        raise ValueError("not a single value")
    text = str(value).strip()
    if not text:
        raise ValueError("empty")
    return text


def _parse_secret(value: object) -> str:
    # SECURITY: the messages below never include the value.
    text = _parse_str(value)
    if len(text) < MIN_SECRET_LENGTH:
        raise ValueError(f"too short to be a secret ({MIN_SECRET_LENGTH} characters at least; "
                         "e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return text


def _check_authority(text: str, *, needs_host: bool) -> None:
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ValueError("the port is not a number from 1 to 65535")
    host = parts.hostname or ""
    if needs_host and not host:
        raise ValueError("no host name")
    if host and not _HOST.match(host):
        # SECURITY: not quoted: in a mistyped URL, the "host" may be part of a password.
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError("the host name is not valid") from None


def _parse_url(*schemes: str, needs_host: bool = True) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _parse_str(value)
        scheme, sep, rest = text.partition("://")
        if not sep or scheme.lower() not in schemes or not rest:
            raise ValueError(f"not a URL with scheme {'/'.join(schemes)}")
        if scheme.lower() != "unix":
            _check_authority(text, needs_host=needs_host)
        return text.rstrip("/") if scheme.lower().startswith("http") else text

    return parse


def _parse_origin(value: object) -> str:
    """An origin such as `https://api.exchange.example`: paths are forwarded unchanged."""
    text = _parse_url("http", "https")(value)
    parts = urlsplit(text)
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError("not an origin such as https://api.exchange.example (scheme, host "
                         "and port only)")
    return text


def _parse_stream_url(value: object) -> str:
    """A WebSocket URL, path included: `wss://streams.exchange.example/streams`."""
    text = _parse_url("ws", "wss")(value)
    if "@" in urlsplit(text).netloc or urlsplit(text).fragment:
        raise ValueError("not a WebSocket URL such as wss://streams.exchange.example/streams "
                         "(no user, no fragment)")
    return text


def _parse_rate(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("not a number")
    try:
        number = float(str(value))
    except ValueError:
        raise ValueError("not a number (messages per second)") from None
    if not number > 0:
        raise ValueError("must be more than zero")
    return number


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
    # libpq takes the host from the query too (`?host=/run/postgresql`).
    "database_url": _parse_url("postgres", "postgresql", needs_host=False),
    "redis_url": _parse_url("redis", "rediss", "unix"),
    "upstream_url": _parse_origin,
    "routes_path": lambda v: Path(_parse_str(v)),
    "secret_key": _parse_secret,
    "key_pepper": _parse_secret,
    "old_key_peppers": _parse_peppers,
    "key_pepper_version": _parse_int,
    "smtp_url": _parse_url("smtp", "smtps"),
    "admin_url": _parse_url("http", "https"),
    "trusted_proxies": _parse_networks,
    "data_dir": lambda v: Path(_parse_str(v)),
    "tls_cert": lambda v: _existing_file(v),
    "tls_key": lambda v: _existing_file(v),
    "upstream_ca_file": lambda v: _existing_file(v),
    "rate_limits": _parse_bool,
    "redis_prefix": _parse_str,
    "log_format": _parse_log_format,
    "access_log": _parse_bool,
    "upstream_secret": _parse_secret,
    "upstream_secret_header": _parse_str,
    "stream_upstream_url": _parse_stream_url,
    "stream_max_message_size": _parse_size,
    "stream_send_buffer": _parse_size,
    "stream_messages_per_second": _parse_rate,
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

# SECURITY: settings whose values are never repeated in a message, and URLs that may carry a
# password (repeated with it replaced by `***`).
_SECRETS = frozenset({"secret_key", "key_pepper", "old_key_peppers", "upstream_secret"})
_URLS = frozenset({"database_url", "redis_url", "smtp_url", "upstream_url", "admin_url",
                   "stream_upstream_url"})
_QUERY_SECRET = re.compile(r"(?i)(?P<name>[?&][a-z_]*(?:pass|secret|token|key)[a-z_]*=)[^&#]*")

# The environment variables of the contract, plus a few of our own.
ENV_VARS: dict[str, str] = {
    "GATEWAY_DATABASE_URL": "database_url",
    "GATEWAY_REDIS_URL": "redis_url",
    "GATEWAY_UPSTREAM_URL": "upstream_url",
    "GATEWAY_STREAM_UPSTREAM_URL": "stream_upstream_url",
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
    "GATEWAY_UPSTREAM_CA_FILE": "upstream_ca_file",
}


def redact_url(text: str) -> str:
    """`text` with a password in it (`scheme://user:PASSWORD@host`, `?password=...`) replaced
    by `***`; for any text, well-formed URL or not."""
    # SECURITY: up to the last `@`, so a password holding `@` or `/` is hidden whole.
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    if "@" in rest:
        userinfo, _, after = rest.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        rest = f"{user}:***@{after}" if colon else f"{userinfo}@{after}"
    rest = _QUERY_SECRET.sub(lambda m: m.group("name") + "***", rest)
    return f"{scheme}{sep}{rest}"


def _problem(origin: str, name: str, value: object, reason: str) -> str:
    if name in _SECRETS:
        # SECURITY: say which setting and what is wrong, never its value.
        for part in (value.values() if isinstance(value, dict) else [value]):
            if str(part).strip():
                reason = reason.replace(str(part), "***")
        return f"{origin}: {reason}"
    if name in _URLS:
        shown = redact_url(str(value))
        return f"{origin} has value {shown!r}: {reason.replace(str(value), shown)}"
    return f"{origin} has value {value!r}: {reason}"


def settings_warnings(settings: Settings) -> list[str]:
    """Settings that work but are probably a mistake, one line each (`check-config` says them)."""
    found = []
    for network in settings.trusted_proxies:
        if network.num_addresses > 1:
            found.append(
                f"GATEWAY_TRUSTED_PROXIES / trusted_proxies: {network} is a range of "
                f"{network.num_addresses} addresses, not one proxy: any host in it can claim any "
                "client IP through X-Forwarded-For (and so pass IP allowlists and per-IP limits); "
                f"list each proxy's own address (/{network.max_prefixlen})")
    return found


def _yaml_lines(text: str) -> dict[str, int]:
    """The line (1-based) of each top-level key of a YAML mapping."""
    node = yaml.compose(text)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(key.value): key.start_mark.line + 1 for key, _ in node.value}


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    # SECURITY: not str(exc), which quotes the offending line (it may hold a secret).
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
    return f"{where}: not valid YAML: {getattr(exc, 'problem', None) or 'cannot be parsed'}"


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
            text = path.read_text()
            document = yaml.safe_load(text) or {}
            lines = _yaml_lines(text)
        except yaml.YAMLError as exc:
            raise SettingsError([_yaml_error(path, exc)]) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError([f"{path}: cannot be read: {exc}"]) from exc
        if not isinstance(document, dict):
            raise SettingsError([f"{path}: expected a mapping of settings"])
        known = {f.name for f in dataclasses.fields(Settings)} - {"config_path"}
        for name, value in document.items():
            at = f"{path}:{lines[str(name)]}" if str(name) in lines else str(path)
            if name not in known:
                problems.append(f"{at}: unknown setting '{name}'")
            elif value is not None:
                raw[name] = (f"{at}: {name}", value)
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
            problems.append(_problem(origin, name, value, str(exc)))
    if problems:
        raise SettingsError(problems)
    settings = Settings(**values)
    if (settings.database_url is None) != (settings.redis_url is None):
        raise SettingsError(
            ["GATEWAY_DATABASE_URL and GATEWAY_REDIS_URL: set both, or neither for embedded mode"]
        )
    return settings
