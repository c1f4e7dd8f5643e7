"""Step `check_permission`: the key must hold the route's permission, named when missing."""

from __future__ import annotations

import pytest

from gateway.http.errors import PermissionMissing
from gateway.pipeline.permissions import check_permission
from tests.support.pipeline import FakeServices, context

ROUTES = """
permissions: {read: Read, trade: Trade, staking: Added by configuration alone}
upstreams: {default: "http://127.0.0.1:9"}
routes:
  - {path: /public/v1/account/balances, methods: [GET], permission: read}
  - {path: /public/v1/account/orders, methods: [POST, DELETE], permission: trade}
  - {path: /public/v1/account/staking, methods: [GET], permission: staking}
  - {path: /public/v1/time, methods: [GET], public: true}
"""


@pytest.fixture
def services() -> FakeServices:
    return FakeServices(routes=ROUTES)


@pytest.mark.parametrize(("held", "method", "path"), [
    (("read",), "GET", "/public/v1/account/balances"),
    (("read", "trade"), "POST", "/public/v1/account/orders"),
    (("trade",), "DELETE", "/public/v1/account/orders"),
    (("staking",), "GET", "/public/v1/account/staking"),
])
def test_a_key_holding_the_permission_passes(
        services: FakeServices, held: tuple[str, ...], method: str, path: str) -> None:
    ctx = context(services, path, method=method)
    ctx.key = services.mint(held).record
    check_permission(ctx)


@pytest.mark.parametrize(("held", "method", "path", "missing"), [
    (("read",), "POST", "/public/v1/account/orders", "trade"),
    (("trade",), "GET", "/public/v1/account/balances", "read"),
    ((), "GET", "/public/v1/account/balances", "read"),
    (("read", "trade"), "GET", "/public/v1/account/staking", "staking"),
    (("Read",), "GET", "/public/v1/account/balances", "read"),  # names are exact
])
def test_a_key_lacking_it_is_refused_naming_it(
        services: FakeServices, held: tuple[str, ...], method: str, path: str,
        missing: str) -> None:
    ctx = context(services, path, method=method)
    ctx.key = services.mint(held).record
    with pytest.raises(PermissionMissing) as refused:
        check_permission(ctx)
    assert refused.value.permission == missing
    assert refused.value.status == 403 and refused.value.code == "MISSING_PERMISSION"
    assert f"'{missing}'" in str(refused.value)


def test_a_route_without_a_permission_asks_for_none(services: FakeServices) -> None:
    ctx = context(services, "/public/v1/time")
    ctx.key = services.mint(()).record
    check_permission(ctx)
