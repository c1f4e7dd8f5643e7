"""Loads the route YAML into a `RouteTable`, reporting every problem as `file:line: message`.

The file is composed (not just parsed) so each node keeps its line. Fields go through typed
checkers, then table-wide checks run (duplicate method + path, unknown permissions).
`gateway check-config` runs exactly this loader.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config.routes import (
    GATEWAY_MESSAGES,
    KEY_INTROSPECTION,
    KeyPolicy,
    RateLimit,
    Route,
    RouteTable,
    StreamRoute,
    compile_pattern,
)
from gateway.config.settings import parse_duration

__all__ = ["ConfigError", "load_route_table", "parse_route_table"]

T = TypeVar("T")

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_SEGMENT = re.compile(r"^(\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z0-9._~!$&'()*+,=:@-]+)$")
_PER = ("account", "ip", "key")
_JSON_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# The exchange's crypto withdrawal: its address is checked unless the route says where else.
_WITHDRAW_CRYPTO = ("POST", "/public/v1/account/withdraw/crypto")
_WITHDRAW_ADDRESS = ("recipient", "address")
# Answered by the gateway itself on every table; the route file cannot declare it.
INTROSPECTION_PATH = "/gateway/v1/key"
_STREAM_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


class ConfigError(Exception):
    """The file is invalid; `problems` holds every `file:line: message` line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Invalid(Exception):
    def __init__(self, node: Node, where: str, message: str) -> None:
        super().__init__(message)
        self.node, self.where, self.message = node, where, message


class _Loader:
    def __init__(self, name: str) -> None:
        self.name = name
        self._found: list[tuple[int, str]] = []

    def problem(self, node: Node, where: str, message: str) -> None:
        line = node.start_mark.line + 1
        self._found.append((line, f"{self.name}:{line}: {where}: {message}" if where
                            else f"{self.name}:{line}: {message}"))

    @property
    def problems(self) -> list[str]:
        """Every problem, in file order (as an editor would walk them)."""
        return [text for _, text in sorted(self._found, key=lambda found: found[0])]

    def attempt(self, fn: Callable[..., T], *args: object) -> T | None:
        """`fn(*args)`, or None after recording the problem it raised."""
        try:
            return fn(*args)
        except _Invalid as exc:
            self.problem(exc.node, exc.where, exc.message)
            return None


# --- typed field checkers ----------------------------------------------------------------


def _mapping(node: Node, where: str) -> dict[str, tuple[Node, Node]]:
    if not isinstance(node, MappingNode):
        raise _Invalid(node, where, "expected a mapping")
    out: dict[str, tuple[Node, Node]] = {}
    for key, value in node.value:
        name = str(key.value)
        if name in out:
            raise _Invalid(key, where, f"duplicate key '{name}'")
        out[name] = (key, value)
    return out


def _sequence(node: Node, where: str) -> list[Node]:
    if not isinstance(node, SequenceNode):
        raise _Invalid(node, where, "expected a list")
    return list(node.value)


def _scalar(node: Node, where: str) -> str:
    if not isinstance(node, ScalarNode):
        raise _Invalid(node, where, "expected a single value")
    return str(node.value)


def _bool(node: Node, where: str) -> bool:
    text = _scalar(node, where).lower()
    if text in ("true", "yes", "on"):
        return True
    if text in ("false", "no", "off"):
        return False
    raise _Invalid(node, where, f"expected true or false, not '{node.value}'")


def _positive_int(node: Node, where: str) -> int:
    text = _scalar(node, where)
    if not text.isdigit() or int(text) <= 0:
        raise _Invalid(node, where, f"expected a positive whole number, not '{text}'")
    return int(text)


def _duration(node: Node, where: str) -> float:
    text = _scalar(node, where)
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise _Invalid(node, where, f"'{text}' is {exc}") from None
    if value <= 0:
        raise _Invalid(node, where, "must be more than zero")
    return value


def json_key_path(node: Node, where: str) -> tuple[str, ...]:
    """`recipient.address`: keys of nested JSON objects, outermost first."""
    text = _scalar(node, where)
    parts = tuple(text.split("."))
    if not all(_JSON_KEY.match(part) for part in parts):
        raise _Invalid(node, where, f"'{text}' is not a dotted path of JSON keys such as "
                                    "recipient.address")
    return parts


def http_method(node: Node, where: str) -> str:
    method = _scalar(node, where)
    if method not in HTTP_METHODS:
        raise _Invalid(node, where, f"unknown method '{method}'")
    return method


def path_template(node: Node, where: str) -> str:
    path = _scalar(node, where)
    if not path.startswith("/") or path == "/" or path.endswith("/") or "//" in path:
        raise _Invalid(node, where, f"path '{path}' must start with / and have no empty segment")
    names: list[str] = []
    for segment in path.strip("/").split("/"):
        if segment in (".", "..") or not _SEGMENT.match(segment):
            raise _Invalid(node, where, f"invalid path segment '{segment}' in '{path}'")
        if segment.startswith("{"):
            if segment in names:
                raise _Invalid(node, where, f"duplicate parameter {segment} in '{path}'")
            names.append(segment)
    return path


def permission_name(node: Node, where: str) -> str:
    name = _scalar(node, where)
    if not _NAME.match(name):
        raise _Invalid(node, where, f"invalid permission name '{name}' (lowercase letters, "
                                    "digits, - and _)")
    return name


def upstream_url(node: Node, where: str) -> str:
    url = _scalar(node, where)
    scheme, sep, rest = url.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or "/" in rest.rstrip("/"):
        raise _Invalid(node, where, f"'{url}' is not an origin such as https://api.example.com")
    return url.rstrip("/")


# --- sections ----------------------------------------------------------------------------


def _rate_limit(node: Node, where: str, bucket: str) -> RateLimit:
    fields = _mapping(node, where)
    for name, (key, _) in fields.items():
        if name not in ("limit", "period", "per"):
            raise _Invalid(key, where, f"unknown field '{name}'")
    if "limit" not in fields:
        raise _Invalid(node, where, "'limit' is required")
    per = "account"
    if "per" in fields:
        per = _scalar(fields["per"][1], f"{where}.per")
        if per not in _PER:
            raise _Invalid(fields["per"][1], f"{where}.per", f"expected one of {', '.join(_PER)}")
    period = _duration(fields["period"][1], f"{where}.period") if "period" in fields else 60.0
    return RateLimit(_positive_int(fields["limit"][1], f"{where}.limit"), period, per, bucket)


def parse_route_table(text: str, name: str = "routes.yaml",
                      upstream_override: str | None = None,
                      source: Path | None = None, *,
                      stream_upstream_override: str | None = None) -> RouteTable:
    """Build the table from YAML text; raise `ConfigError` listing every problem."""
    loader = _Loader(name)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError([f"{name}:{line}: invalid YAML: {exc.problem}"]) from None
    except yaml.reader.ReaderError as exc:
        # A control character: the reader reports a position, not a mark.
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError([f"{name}:{line}: invalid YAML: unacceptable character "
                           f"#x{int(exc.character):04x}"]) from None
    if root is None:
        raise ConfigError([f"{name}:1: the file is empty"])
    top = loader.attempt(_mapping, root, "")
    if top is None:
        raise ConfigError(loader.problems)
    for key_name, (key, _) in top.items():
        if key_name not in ("permissions", "upstreams", "policy", "rate_limits", "routes",
                            "streams"):
            loader.problem(key, "", f"unknown section '{key_name}'")

    permissions: dict[str, str] = {}
    if "permissions" in top:
        fields = loader.attempt(_mapping, top["permissions"][1], "permissions") or {}
        for perm, (key, value) in fields.items():
            if loader.attempt(permission_name, key, "permissions") is not None:
                permissions[perm] = str(value.value) if isinstance(value, ScalarNode) else ""
    else:
        loader.problem(root, "", "missing section 'permissions'")

    upstreams: dict[str, str] = {}
    if "upstreams" in top:
        fields = loader.attempt(_mapping, top["upstreams"][1], "upstreams") or {}
        for upstream, (_, value) in fields.items():
            url = loader.attempt(upstream_url, value, f"upstreams.{upstream}")
            if url is not None:
                upstreams[upstream] = url
    if upstream_override:
        upstreams["default"] = upstream_override.rstrip("/")
    if "default" not in upstreams:
        loader.problem(root, "upstreams", "an upstream named 'default' is required "
                                          "(or set GATEWAY_UPSTREAM_URL)")

    policy = loader.attempt(_policy, top["policy"][1], permissions, loader) \
        if "policy" in top else KeyPolicy()

    defaults = {"private": RateLimit(200, 60.0, "account", "private"),
                "public": RateLimit(240, 60.0, "ip", "public")}
    by_permission: dict[str, RateLimit] = {}
    if "rate_limits" in top:
        limits = loader.attempt(_mapping, top["rate_limits"][1], "rate_limits") or {}
        for lname, (key, value) in limits.items():
            where = f"rate_limits.{lname}"
            if lname in defaults:
                parsed = loader.attempt(_rate_limit, value, where, lname)
                if parsed is not None:
                    defaults[lname] = parsed
            elif lname == "permissions":
                for perm, (pkey, pvalue) in (loader.attempt(_mapping, value, where) or {}).items():
                    if perm not in permissions:
                        loader.problem(pkey, where, f"unknown permission '{perm}'")
                        continue
                    parsed = loader.attempt(_rate_limit, pvalue, f"{where}.{perm}",
                                            f"permission:{perm}")
                    if parsed is not None:
                        by_permission[perm] = parsed
            else:
                loader.problem(key, "rate_limits", f"unknown field '{lname}' "
                                                   "(expected private, public or permissions)")

    routes: list[Route] = []
    seen: dict[tuple[str, str], int] = {}
    route_nodes = (loader.attempt(_sequence, top["routes"][1], "routes") or []
                   if "routes" in top else [])
    if "routes" not in top:
        loader.problem(root, "", "missing section 'routes'")
    for index, node in enumerate(route_nodes):
        where = f"routes[{index}]"
        route = loader.attempt(_route, node, where, index, permissions, upstreams,
                               defaults, by_permission)
        if route is None:
            continue
        if route.pattern == INTROSPECTION_PATH:
            loader.problem(node, where, f"{INTROSPECTION_PATH} is answered by the gateway "
                                        "itself (key introspection); remove this route")
            continue
        shape = compile_pattern(route.pattern)[0].pattern
        for method in sorted(route.methods):
            if (method, shape) in seen:
                loader.problem(node, where, f"{method} {route.pattern} duplicates "
                                            f"routes[{seen[(method, shape)]}]")
            seen[(method, shape)] = index
        routes.append(route)

    own = Route(pattern=INTROSPECTION_PATH, methods=frozenset({"GET"}), permission=None,
                is_public=False, upstream=upstreams.get("default", ""), timeout=None,
                rate_limit=defaults["private"], local=KEY_INTROSPECTION)

    streams: dict[str, StreamRoute] = {}
    if "streams" in top:
        streams = _streams(loader, top["streams"][1], permissions, routes,
                           stream_upstream_override)

    if loader.problems:
        raise ConfigError(loader.problems)
    return RouteTable(permissions=permissions, upstreams=upstreams, routes=tuple(routes),
                      policy=policy or KeyPolicy(), source=source, own_routes=(own,),
                      streams=streams)


def _policy(node: Node, permissions: dict[str, str], loader: _Loader) -> KeyPolicy:
    """`policy:`: each field checked on its own, so every bad one is reported."""
    fields = _mapping(node, "policy")
    require: set[str] = set()
    days: dict[str, int | None] = {"max_key_lifetime_days": None, "dormant_after_days": None}
    for name, (key, value) in fields.items():
        where = f"policy.{name}"
        if name == "require_ip_allowlist":
            for i, item in enumerate(loader.attempt(_sequence, value, where) or []):
                required = loader.attempt(permission_name, item, f"{where}[{i}]")
                if required is not None and required not in permissions:
                    loader.problem(item, f"{where}[{i}]", f"unknown permission '{required}'")
                elif required is not None:
                    require.add(required)
        elif name in days:
            days[name] = loader.attempt(_positive_int, value, where)
        else:
            loader.problem(key, "policy", f"unknown field '{name}' (expected "
                                          "require_ip_allowlist, max_key_lifetime_days or "
                                          "dormant_after_days)")
    return KeyPolicy(frozenset(require), days["max_key_lifetime_days"],
                     days["dormant_after_days"])


def _route(node: Node, where: str, index: int, permissions: dict[str, str],
           upstreams: dict[str, str], defaults: dict[str, RateLimit],
           by_permission: dict[str, RateLimit]) -> Route:
    fields = _mapping(node, where)
    for fname, (key, _) in fields.items():
        if fname not in ("path", "methods", "permission", "public", "upstream", "timeout",
                         "rate_limit", "withdraw_address"):
            raise _Invalid(key, where, f"unknown field '{fname}'")
    if "path" not in fields:
        raise _Invalid(node, where, "'path' is required")
    path = path_template(fields["path"][1], f"{where}.path")
    if "methods" not in fields:
        raise _Invalid(node, where, "'methods' is required")
    method_nodes = _sequence(fields["methods"][1], f"{where}.methods")
    if not method_nodes:
        raise _Invalid(fields["methods"][1], f"{where}.methods", "at least one method is needed")
    methods = frozenset(http_method(m, f"{where}.methods[{i}]")
                        for i, m in enumerate(method_nodes))
    is_public = _bool(fields["public"][1], f"{where}.public") if "public" in fields else False
    permission: str | None = None
    if "permission" in fields:
        pnode = fields["permission"][1]
        permission = permission_name(pnode, f"{where}.permission")
        if permission not in permissions:
            raise _Invalid(pnode, f"{where}.permission", f"unknown permission '{permission}'")
        if is_public:
            raise _Invalid(pnode, where, "a public route takes no permission")
    elif not is_public:
        raise _Invalid(node, where, "needs a 'permission', or 'public: true'")
    upstream = upstreams.get("default", "")
    if "upstream" in fields:
        uname = _scalar(fields["upstream"][1], f"{where}.upstream")
        if uname not in upstreams:
            raise _Invalid(fields["upstream"][1], f"{where}.upstream",
                           f"unknown upstream '{uname}'")
        upstream = upstreams[uname]
    timeout = _duration(fields["timeout"][1], f"{where}.timeout") if "timeout" in fields else None
    if "rate_limit" in fields:
        limit = _rate_limit(fields["rate_limit"][1], f"{where}.rate_limit", f"route:{index}")
    elif is_public:
        limit = defaults["public"]
    else:
        assert permission is not None
        limit = by_permission.get(permission, defaults["private"])
    address: tuple[str, ...] | None = None
    if "withdraw_address" in fields:
        anode = fields["withdraw_address"][1]
        address = json_key_path(anode, f"{where}.withdraw_address")
        if is_public:
            raise _Invalid(anode, where, "a public route has no key to check addresses against")
        if not methods <= _BODY_METHODS:
            raise _Invalid(anode, where, "withdraw_address needs methods with a body "
                                         "(POST, PUT or PATCH)")
    elif path == _WITHDRAW_CRYPTO[1] and methods == {_WITHDRAW_CRYPTO[0]} and not is_public:
        address = _WITHDRAW_ADDRESS  # the exchange's own body shape
    return Route(pattern=path, methods=methods, permission=permission, is_public=is_public,
                 upstream=upstream, timeout=timeout, rate_limit=limit,
                 line=node.start_mark.line + 1, withdraw_address=address,
                 reads_body=address is not None)


def stream_url(node: Node, where: str) -> str:
    url = _scalar(node, where)
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if (parts.scheme not in ("ws", "wss") or not parts.hostname or "@" in parts.netloc
            or parts.fragment or not port_ok):
        raise _Invalid(node, where, f"'{url}' is not a WebSocket URL such as "
                                    "wss://streams.example.com/streams")
    return url


def _stream_access(loader: _Loader, node: Node, where: str, kind: str,
                   permissions: dict[str, str]) -> dict[str, str | None]:
    """A `NAME: permission` (or `NAME: public`) mapping; every bad entry is reported."""
    out: dict[str, str | None] = {}
    for name, (key, value) in (loader.attempt(_mapping, node, where) or {}).items():
        if not _STREAM_NAME.match(name):
            loader.problem(key, where, f"invalid {kind} name '{name}' (capital letters, "
                                       "digits and _)")
            continue
        if kind == "message" and name in GATEWAY_MESSAGES:
            loader.problem(key, where, f"{name} is read by the gateway itself on every "
                                       "stream; it takes no permission here")
            continue
        needed = loader.attempt(_scalar, value, f"{where}.{name}")
        if needed is None:
            continue
        if needed == "public":
            out[name] = None
        elif needed in permissions:
            out[name] = needed
        else:
            loader.problem(value, f"{where}.{name}",
                           f"unknown permission '{needed}' (or public)")
    return out


def _stream_route(loader: _Loader, node: Node, where: str, permissions: dict[str, str],
                  default_upstream: str | None, has_default: bool) -> StreamRoute | None:
    """One stream route; `has_default`: a default upstream was given (perhaps a bad one,
    reported already)."""
    fields = loader.attempt(_mapping, node, where)
    if fields is None:
        return None
    is_whole = True
    for fname, (key, _) in fields.items():
        if fname not in ("path", "upstream", "channels", "messages"):
            loader.problem(key, where, f"unknown field '{fname}'")
            is_whole = False
    path = None
    if "path" not in fields:
        loader.problem(node, where, "'path' is required")
    else:
        path = loader.attempt(path_template, fields["path"][1], f"{where}.path")
        if path is not None and "{" in path:
            loader.problem(fields["path"][1], f"{where}.path",
                           f"a stream path is matched exactly: no parameters in '{path}'")
            path = None
    upstream = default_upstream
    if "upstream" in fields:
        upstream = loader.attempt(stream_url, fields["upstream"][1], f"{where}.upstream")
        is_whole = is_whole and upstream is not None
    elif upstream is None and not has_default:
        loader.problem(node, where, "needs an 'upstream', or a default one in streams.upstream "
                                    "(or set GATEWAY_STREAM_UPSTREAM_URL)")
    channels: dict[str, str | None] = {}
    if "channels" not in fields:
        loader.problem(node, where, "'channels' is required (channel: permission or public)")
        is_whole = False
    else:
        channels = _stream_access(loader, fields["channels"][1], f"{where}.channels",
                                  "channel", permissions)
    messages: dict[str, str | None] = {}
    if "messages" in fields:
        messages = _stream_access(loader, fields["messages"][1], f"{where}.messages",
                                  "message", permissions)
    if path is None or upstream is None or not is_whole:
        return None
    return StreamRoute(path=path, upstream=upstream, channels=channels, messages=messages,
                       line=node.start_mark.line + 1)


def _streams(loader: _Loader, node: Node, permissions: dict[str, str], routes: list[Route],
             upstream_override: str | None) -> dict[str, StreamRoute]:
    """The `streams:` section: a default `upstream` and the stream `routes`."""
    fields = loader.attempt(_mapping, node, "streams")
    if fields is None:
        return {}
    for fname, (key, _) in fields.items():
        if fname not in ("upstream", "routes"):
            loader.problem(key, "streams", f"unknown field '{fname}' (expected upstream or "
                                           "routes)")
    default = None
    if "upstream" in fields:
        default = loader.attempt(stream_url, fields["upstream"][1], "streams.upstream")
    default = upstream_override or default
    rest = {route.pattern: index for index, route in enumerate(routes)}
    out: dict[str, StreamRoute] = {}
    items = (loader.attempt(_sequence, fields["routes"][1], "streams.routes") or []
             if "routes" in fields else [])
    for index, item in enumerate(items):
        where = f"streams.routes[{index}]"
        stream = _stream_route(loader, item, where, permissions, default,
                               "upstream" in fields or upstream_override is not None)
        if stream is None:
            continue
        if stream.path in out:
            loader.problem(item, where, f"stream path {stream.path} is declared twice")
        elif stream.path == INTROSPECTION_PATH:
            loader.problem(item, where, f"{stream.path} is answered by the gateway itself")
        elif stream.path in rest:
            loader.problem(item, where, f"{stream.path} is also a REST route "
                                        f"(routes[{rest[stream.path]}])")
        else:
            out[stream.path] = stream
    return out


def load_route_table(path: Path, upstream_override: str | None = None, *,
                     stream_upstream_override: str | None = None) -> RouteTable:
    """Read and build the table from a file; `ConfigError` on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}:1: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text"]) from None
    return parse_route_table(text, str(path), upstream_override, source=path,
                             stream_upstream_override=stream_upstream_override)
