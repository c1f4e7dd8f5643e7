"""The per-request state the pipeline's steps read and fill in: one slotted object per request."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.gateway import Gateway
    from gateway.keys import ParsedToken
    from gateway.routes import Route
    from gateway.store.base import KeyRecord

__all__ = ["ConnectionState", "RequestContext"]


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
        "client_ip",
        "client_ip_text",
        "connection",
        "gateway",
        "key",
        "path",
        "rate_limit",
        "rate_remaining",
        "request",
        "request_id",
        "route",
        "token",
        "upstream_ns",
    )

    def __init__(
        self,
        request: web.Request,
        request_id: str,
        path: str,
        client_ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
        client_ip_text: str,
        gateway: Gateway,
    ) -> None:
        self.gateway = gateway  # the process's services: store, routes, limiter, ...
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
