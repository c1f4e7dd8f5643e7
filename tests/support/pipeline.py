"""The pipeline's services without Redis or PostgreSQL, for unit tests of its steps.

The real in-process parts (MemoryCache, LayeredKeyStore, the local GCRA, AuthFailureGuard's
local counting, a real route table) with a dictionary as the bottom layer of the key store:
it hands out a new `KeyRecord` per load, as PostgreSQL does, so "the very same record" means
what it means in production.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, cast

from gateway.config.route_file import parse_route_table
from gateway.config.routes import RouteTable
from gateway.config.settings import Settings
from gateway.http.client_ip import parse_address
from gateway.http.request import RequestView
from gateway.keys.tokens import generate_key_id, generate_token, hash_secret
from gateway.pipeline.abuse import AuthFailureGuard
from gateway.pipeline.context import ConnectionState, RequestContext
from gateway.pipeline.limiter import RateLimiter
from gateway.store.base import KeyRecord
from gateway.store.layered import LayeredKeyStore
from gateway.store.memory import MemoryCache
from gateway.store.postgres import PostgresKeyStore

__all__ = ["PEPPER", "ROUTES", "DictKeyStore", "FakeServices", "Minted", "context"]

PEPPER = "unit-test-pepper"
ROUTES = """
permissions: {read: Read, trade: Trade, withdraw: Withdraw}
upstreams: {default: "http://127.0.0.1:9"}
policy: {require_ip_allowlist: [withdraw]}
rate_limits:
  private: {limit: 3, period: 60, per: account}
  public: {limit: 2, period: 60, per: ip}
routes:
  - {path: /public/v1/time, methods: [GET], public: true}
  - {path: /public/v1/account/balances, methods: [GET], permission: read}
  - {path: /public/v1/account/orders, methods: [POST], permission: trade}
  - {path: /public/v1/account/trades, methods: [GET], permission: read,
     rate_limit: {limit: 2, period: 60, per: key}}
  - {path: /public/v1/account/withdraw/crypto, methods: [POST], permission: withdraw}
"""


@dataclasses.dataclass
class Minted:
    """A key as its owner holds it (the token) and as the store holds it (the record)."""

    token: str
    record: KeyRecord


class DictKeyStore:
    """The bottom layer: key id -> record, each load a fresh copy; counts its loads."""

    def __init__(self) -> None:
        self.records: dict[str, KeyRecord] = {}
        self.loads = 0

    async def get(self, key_id: str) -> KeyRecord | None:
        self.loads += 1
        record = self.records.get(key_id)
        return dataclasses.replace(record) if record is not None else None

    async def aclose(self) -> None:
        pass


class FakeServices:
    """What `gateway.pipeline.context.Services` asks for, with no server behind any of it."""

    def __init__(self, *, rate_limits: bool = True, auth_fail_limit: int = 3,
                 routes: str = ROUTES) -> None:
        self.settings = Settings(key_pepper=PEPPER)
        self.table: RouteTable = parse_route_table(routes)
        self.bottom = DictKeyStore()
        self.memory = MemoryCache(ttl=60.0, negative_ttl=1.0, stale_ttl=300.0)
        self.store = LayeredKeyStore(self.memory, None, cast(PostgresKeyStore, self.bottom))
        self.peppers: Mapping[int, str] = {1: PEPPER}
        self.guard = AuthFailureGuard(None, "unit:", auth_fail_limit, 60.0, 600.0)
        self.limiter: RateLimiter | None = RateLimiter(None, "unit:") if rate_limits else None
        self.pool = cast(Any, None)  # no step here asks PostgreSQL
        self.spawned: list[Coroutine[Any, Any, None]] = []
        self.account = 0
        # As the real services: told of invalidated keys (the edge's streams listen).
        self.key_watchers: list[Callable[[str], None]] = []
        self.reset_watchers: list[Callable[[], None]] = []

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.spawned.append(coro)

    def mint(self, permissions: tuple[str, ...] = ("read",), ips: tuple[str, ...] = (),
             account_id: int | None = None) -> Minted:
        """A new active key in the bottom layer (not cached yet)."""
        key_id = generate_key_id()
        token, secret = generate_token(key_id)
        if account_id is None:
            self.account += 1
            account_id = self.account
        record = KeyRecord(key_id, account_id, frozenset(permissions),
                           tuple(ipaddress.ip_network(ip) for ip in ips),
                           hash_secret(secret, PEPPER), 1)
        self.bottom.records[key_id] = record
        return Minted(token, record)

    async def warm(self, minted: Minted) -> KeyRecord:
        """Load the key into the memory cache, as a first request would; the cached record."""
        record = await self.store.get(minted.record.key_id)
        assert record is not None
        return record

    async def drain(self) -> None:
        """Run what the steps spawned (failed-auth counting)."""
        spawned, self.spawned = self.spawned, []
        await asyncio.gather(*spawned)


def context(services: FakeServices, path: str = "/public/v1/account/balances", *,
            method: str = "GET", authorization: tuple[str, ...] = (), ip: str = "198.51.100.7",
            connection: ConnectionState | None = None, route: bool = True) -> RequestContext:
    """A request's context as the edge makes it, with the route matched when `route`."""
    view = RequestView(method, path.encode(), ip, "http")
    view.authorization = list(authorization)
    address = parse_address(ip)
    assert address is not None
    ctx = RequestContext(view, "req-1", path, address[0], address[1], services)
    ctx.connection = connection
    if route:
        ctx.route = services.table.match(method, path)
        assert ctx.route is not None, path
    return ctx
