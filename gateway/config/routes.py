"""The compiled route table and `match(method, path)`.

Built by `gateway.config.route_file` from YAML. Static paths are one dict lookup; paths with
parameters are tried per (method, segment count), most specific first: at the first segment
where two patterns differ, a literal beats a parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["GATEWAY_MESSAGES", "KEY_INTROSPECTION", "KeyPolicy", "RateLimit", "Route",
           "RouteTable", "StreamRoute", "compile_pattern"]

KEY_INTROSPECTION = "key_introspection"  # `Route.local` of GET /gateway/v1/key

# Client message types the gateway reads itself on every stream: never declared per route.
GATEWAY_MESSAGES = frozenset({"AUTHENTICATE", "SUBSCRIBE", "UPDATE_SUBSCRIPTION", "UNSUBSCRIBE"})
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`limit` requests per `period` seconds, counted per account, per client IP or per key."""

    limit: int
    period: float
    per: str
    bucket: str  # which counter: routes sharing a bucket share a budget

    @property
    def emission_interval(self) -> float:
        return self.period / self.limit


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """The route file's `policy:`: rules every key must meet, at creation and at the gateway."""

    require_ip_allowlist: frozenset[str] = frozenset()  # permissions needing an allowlist
    max_key_lifetime_days: int | None = None  # new keys (and rolls) must expire within it
    dormant_after_days: int | None = None  # a key unused this long gets APIKEY_EXPIRED

    @property
    def dormant_after(self) -> float | None:
        """`dormant_after_days` in seconds."""
        days = self.dormant_after_days
        return None if days is None else days * 86400.0


@dataclass(frozen=True, slots=True)
class Route:
    pattern: str
    methods: frozenset[str]
    permission: str | None  # None only for public routes and the gateway's own
    is_public: bool
    upstream: str  # origin URL, resolved at load time
    timeout: float | None
    rate_limit: RateLimit
    line: int = 0
    # Where the body's withdrawal address is (JSON keys, outermost first): checked against
    # the key's allowed addresses. None: no address check on this route.
    withdraw_address: tuple[str, ...] | None = None
    # The edge reads the whole body (within the body limit) into `ctx.body` before the
    # steps run, and forwards exactly those bytes.
    reads_body: bool = False
    # Answered by the gateway itself (e.g. KEY_INTROSPECTION), never forwarded.
    local: str | None = None


@dataclass(frozen=True, slots=True)
class StreamRoute:
    """A WebSocket stream path: its upstream, and what each channel and message needs.

    A permission of None is public (no key needed). A channel or client message type that
    is not listed is refused at the gateway and never forwarded.
    """

    path: str
    upstream: str  # ws:// or wss:// URL, path included, resolved at load time
    channels: Mapping[str, str | None]
    messages: Mapping[str, str | None]  # besides AUTHENTICATE and the subscription messages
    line: int = 0


@dataclass(frozen=True, slots=True)
class _Compiled:
    regex: re.Pattern[str]
    specificity: tuple[int, ...]
    route: Route


def compile_pattern(pattern: str) -> tuple[re.Pattern[str], tuple[int, ...]]:
    """A path template's regex and its specificity key (0 literal, 1 parameter per segment)."""
    parts: list[str] = []
    key: list[int] = []
    for segment in pattern.strip("/").split("/"):
        if _PARAM.match(segment):
            parts.append("[^/]+")
            key.append(1)
        else:
            parts.append(re.escape(segment))
            key.append(0)
    return re.compile("/" + "/".join(parts)), tuple(key)


@dataclass(frozen=True, slots=True)
class RouteTable:
    """What the YAML declares, compiled. Immutable: a reload builds a new table."""

    permissions: Mapping[str, str]
    upstreams: Mapping[str, str]
    routes: tuple[Route, ...]
    policy: KeyPolicy = field(default_factory=KeyPolicy)
    source: Path | None = None
    own_routes: tuple[Route, ...] = ()  # answered by the gateway itself, not from the file
    streams: Mapping[str, StreamRoute] = field(default_factory=dict)  # by exact path
    _static: dict[tuple[str, str], Route] = field(default_factory=dict, repr=False)
    _dynamic: dict[tuple[str, int], list[_Compiled]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for route in (*self.routes, *self.own_routes):
            regex, specificity = compile_pattern(route.pattern)
            segments = len(specificity)
            for method in route.methods:
                if 1 not in specificity:
                    self._static[(method, "/" + route.pattern.strip("/"))] = route
                else:
                    self._dynamic.setdefault((method, segments), []).append(
                        _Compiled(regex, specificity, route)
                    )
        for candidates in self._dynamic.values():
            candidates.sort(key=lambda c: c.specificity)

    @property
    def require_ip_allowlist(self) -> frozenset[str]:
        """Permissions the policy allows only on keys with an IP allowlist."""
        return self.policy.require_ip_allowlist

    def match(self, method: str, path: str) -> Route | None:
        """The route for a normalised path, or None (the caller answers 404)."""
        route = self._static.get((method, path))
        if route is not None:
            return route
        candidates = self._dynamic.get((method, path.count("/")))
        if candidates:
            for candidate in candidates:
                if candidate.regex.fullmatch(path):
                    # A static route of the same method for this exact path was tried first.
                    return candidate.route
        return None
