"""Steps `check_key_expiry` and `check_withdrawal_address` on a request context: what they
read, and what they raise. Pure: the route table is real, nothing is served."""

from __future__ import annotations

import ipaddress
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.config.route_file import parse_route_table
from gateway.config.routes import RouteTable
from gateway.http.errors import KeyExpired, WithdrawAddressNotAllowed, WithdrawBodyUnreadable
from gateway.http.request import RequestView
from gateway.pipeline.context import RequestContext
from gateway.pipeline.lifecycle import check_key_expiry, check_withdrawal_address
from gateway.store.base import KeyRecord

ROUTES = """\
permissions: {read: Read, withdraw: Withdraw}
upstreams: {default: "http://127.0.0.1:9000"}
policy: {dormant_after_days: 30}
routes:
  - {path: /public/v1/account/balances, methods: [GET], permission: read}
  - {path: /public/v1/account/withdraw/crypto, methods: [POST], permission: withdraw}
"""


def _ctx(table: RouteTable, method: str, path: str, key: KeyRecord,
         body: bytes | None = None) -> RequestContext:
    services: Any = SimpleNamespace(table=table)
    ctx = RequestContext(RequestView(method, path.encode(), "127.0.0.1", "http"), "r", path,
                         ipaddress.ip_address("127.0.0.1"), "127.0.0.1", services)
    ctx.route = table.match(method, path)
    ctx.key, ctx.body = key, body
    return ctx


def _key(**fields: Any) -> KeyRecord:
    fields.setdefault("confirmed_at", time.time())
    return KeyRecord(key_id="aaaaaaaaaaaaaaaa", account_id=1,
                     permissions=frozenset({"read", "withdraw"}), allowed_ips=(),
                     secret_hash=b"h" * 32, hash_version=1, **fields)


@pytest.fixture
def table() -> RouteTable:
    return parse_route_table(ROUTES)


def test_expiry_is_read_from_the_record_and_the_clock(table: RouteTable) -> None:
    check_key_expiry(_ctx(table, "GET", "/public/v1/account/balances",
                          _key(expires_at=time.time() + 60)))
    with pytest.raises(KeyExpired):
        check_key_expiry(_ctx(table, "GET", "/public/v1/account/balances",
                              _key(expires_at=time.time() - 1)))


def test_dormancy_comes_from_the_route_files_policy(table: RouteTable) -> None:
    idle = _key(confirmed_at=time.time() - 31 * 86400)
    with pytest.raises(KeyExpired, match="dormant"):
        check_key_expiry(_ctx(table, "GET", "/public/v1/account/balances", idle))
    lenient = parse_route_table(ROUTES.replace("policy: {dormant_after_days: 30}\n", ""))
    check_key_expiry(_ctx(lenient, "GET", "/public/v1/account/balances", idle))


def _body(address: str) -> bytes:
    return json.dumps({"currency": "BTC", "recipient": {"address": address}}).encode()


def test_the_address_check_applies_to_keys_with_a_list_on_its_route(table: RouteTable) -> None:
    listed = _key(withdraw_addresses=(("bc1qgood", 0.0),))
    path = "/public/v1/account/withdraw/crypto"
    check_withdrawal_address(_ctx(table, "POST", path, listed, _body("bc1qgood")))
    with pytest.raises(WithdrawAddressNotAllowed):
        check_withdrawal_address(_ctx(table, "POST", path, listed, _body("bc1qevil")))
    with pytest.raises(WithdrawBodyUnreadable):
        check_withdrawal_address(_ctx(table, "POST", path, listed, b"{}"))
    # No list: anything goes; another route: the body is not looked at.
    check_withdrawal_address(_ctx(table, "POST", path, _key(), b"not json"))
    check_withdrawal_address(_ctx(table, "GET", "/public/v1/account/balances", listed, None))
