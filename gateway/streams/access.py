"""Who a stream session is, and what it may do: the REST pipeline's own steps, run for it.

A session's key is checked by the steps a private REST request runs (`check_client_blocked`,
`parse_key`, `lookup_key`, `check_key_expiry`, `check_ip`), on a `RequestContext` made for
the occasion, so a stream refuses exactly what REST refuses, with the same codes. A
channel's or a message's permission goes through `check_ip` (the `require_ip_allowlist`
policy) and `check_permission`, given a route that names it.
"""

from __future__ import annotations

from gateway.config.routes import RateLimit, Route, StreamRoute
from gateway.http.client_ip import Address
from gateway.http.errors import GatewayError, KeyMissing
from gateway.http.request import RequestView
from gateway.pipeline.allowlist import check_ip
from gateway.pipeline.auth import check_client_blocked, lookup_key, parse_key
from gateway.pipeline.context import ConnectionState, RequestContext, Services
from gateway.pipeline.lifecycle import check_key_expiry
from gateway.pipeline.permissions import check_permission
from gateway.store.base import KeyRecord

__all__ = ["Refusal", "StreamAccess", "expiry_of", "identity_of"]

_NO_LIMIT = RateLimit(1, 1.0, "ip", "stream")  # never applied: streams bound messages instead


class Refusal(Exception):
    """A stream message or session refused with the contract's code."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message

    @classmethod
    def of(cls, error: GatewayError) -> Refusal:
        return cls(error.code, error.text)


def expiry_of(record: KeyRecord) -> float | None:
    """The key's expiry as a unix time (its own, or a roll's overlap end), if it has one."""
    return record.expires_at


def identity_of(record: KeyRecord) -> tuple[str, int, frozenset[str]]:
    """What the upstream is told of a key (`X-Gateway-*`): a change needs a new upstream."""
    return (record.key_id, record.account_id, record.permissions)


class StreamAccess:
    """The checks of one session, against its client address and its stream route."""

    __slots__ = ("_routes", "address", "known", "peer", "request_id", "scheme", "services",
                 "stream")

    def __init__(self, services: Services, stream: StreamRoute, address: Address, peer: str,
                 scheme: str, request_id: str) -> None:
        self.services = services
        self.stream = stream
        self.address = address
        self.peer = peer
        self.scheme = scheme
        self.request_id = request_id
        # The key this session last proved, and with which token: re-checks of the same key
        # skip the hash unless the cached record changed (as on a REST keep-alive connection).
        self.known = ConnectionState()
        self._routes: dict[str | None, Route] = {}

    def _route(self, permission: str | None) -> Route:
        route = self._routes.get(permission)
        if route is None:
            route = self._routes[permission] = Route(
                pattern=self.stream.path, methods=frozenset({"GET"}), permission=permission,
                is_public=permission is None, upstream=self.stream.upstream, timeout=None,
                rate_limit=_NO_LIMIT, line=self.stream.line)
        return route

    def _context(self, authorization: list[str]) -> RequestContext:
        view = RequestView("GET", self.stream.path.encode(), self.peer, self.scheme)
        view.authorization = authorization
        ctx = RequestContext(view, self.request_id, self.stream.path, self.address[0],
                             self.address[1], self.services)
        ctx.connection = self.known
        ctx.route = self._route(None)
        return ctx

    async def check_key(self, authorization: list[str]) -> KeyRecord:
        """The key `authorization` (`Bearer TOKEN` values) presents, checked as REST checks it
        (blocked client address, format, store, expiry and dormancy, IP allowlist). Raises
        the failing step's `GatewayError`."""
        ctx = self._context(authorization)
        check_client_blocked(ctx)
        parse_key(ctx)
        pending = lookup_key(ctx)
        if pending is not None:
            await pending
        check_key_expiry(ctx)
        check_ip(ctx)
        key = ctx.key
        assert key is not None
        return key

    @property
    def authorization(self) -> list[str]:
        """The `Authorization` value that last proved the session's key (never logged)."""
        value = self.known.authorization
        return [value] if value is not None else []

    def require(self, key: KeyRecord | None, permission: str | None, what: str) -> None:
        """Raises `Refusal` unless a session with `key` may use what needs `permission`."""
        if permission is None:
            return
        if key is None:
            raise Refusal(KeyMissing.code, f"{what} needs an authenticated session")
        ctx = self._context([])
        ctx.key = key
        ctx.route = self._route(permission)
        try:
            check_ip(ctx)
            check_permission(ctx)
        except GatewayError as error:
            raise Refusal(error.code, f"{what} needs the '{permission}' permission"
                          if error.code == "MISSING_PERMISSION" else error.text) from None
