"""The per-request state the pipeline's steps read and fill in: one slotted object per request,
and the narrow view of the process's services that the steps are given beside it."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol

import asyncpg

from gateway.config.routes import Route, RouteTable
from gateway.config.settings import Settings
from gateway.http.request import RequestView
from gateway.keys.tokens import ParsedToken
from gateway.pipeline.abuse import AuthFailureGuard
from gateway.pipeline.limiter import RateLimiter
from gateway.store.base import KeyRecord
from gateway.store.layered import LayeredKeyStore

__all__ = ["ConnectionState", "RequestContext", "Services"]


class Services(Protocol):
    """What the steps use of the process's services (`gateway.services.Gateway` has them)."""

    settings: Settings
    table: RouteTable
    store: LayeredKeyStore
    peppers: Mapping[int, str]
    guard: AuthFailureGuard
    limiter: RateLimiter | None
    pool: asyncpg.Pool  # PostgreSQL, for the answers the gateway gives itself

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...


class ConnectionState:
    """What the pipeline remembers between requests of one keep-alive connection.

    The key that the last request proved, with the exact `Authorization` value that proved
    it: a client repeating it on the same connection skips parsing and hashing again, as
    long as the key cache still holds that very record (a deletion or refill replaces it).
    Lives only as long as the connection; never logged.
    """

    __slots__ = ("authorization", "key", "token")

    def __init__(self) -> None:
        self.authorization: str | None = None
        self.token: ParsedToken | None = None
        self.key: KeyRecord | None = None


class RequestContext:
    """Filled in step by step; a field is None until the step that finds it has run."""

    __slots__ = (
        "body",
        "body_arrived",
        "client_ip",
        "client_ip_text",
        "connection",
        "key",
        "path",
        "rate_limit",
        "rate_remaining",
        "request",
        "request_id",
        "route",
        "services",
        "token",
        "upstream_ns",
    )

    def __init__(
        self,
        request: RequestView,
        request_id: str,
        path: str,
        client_ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
        client_ip_text: str,
        services: Services,
    ) -> None:
        self.services = services  # the process's store, routes, limiter, ...
        self.request = request
        self.request_id = request_id
        self.path = path  # normalised: what is matched and what is forwarded
        self.client_ip = client_ip
        self.client_ip_text = client_ip_text  # canonical: what logs, headers and counters use
        self.route: Route | None = None
        self.token: ParsedToken | None = None
        self.key: KeyRecord | None = None
        self.rate_limit: int | None = None
        self.rate_remaining: int | None = None
        self.upstream_ns: int | None = None  # time spent on the upstream, when it was asked
        self.connection: ConnectionState | None = None  # set when the server tracks it
        # On a route that `reads_body`, the edge collects the whole body (within the body
        # limit) and resolves `body_arrived` with it; a step that needs it waits for that.
        # Exactly these bytes are forwarded.
        self.body: bytes | None = None
        self.body_arrived: asyncio.Future[bytes] | None = None
