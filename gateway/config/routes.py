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

__all__ = ["RateLimit", "Route", "RouteTable", "compile_pattern"]

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
class Route:
    pattern: str
    methods: frozenset[str]
    permission: str | None  # None only for public routes
    is_public: bool
    upstream: str  # origin URL, resolved at load time
    timeout: float | None
    rate_limit: RateLimit
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
    require_ip_allowlist: frozenset[str] = frozenset()
    source: Path | None = None
    _static: dict[tuple[str, str], Route] = field(default_factory=dict, repr=False)
    _dynamic: dict[tuple[str, int], list[_Compiled]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for route in self.routes:
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
