"""The shipped route table (config/routes.yaml) and `RouteTable.match`."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.route_file import load_route_table
from gateway.config.routes import RateLimit, Route, RouteTable, compile_pattern

SHIPPED = Path(__file__).resolve().parents[4] / "config" / "routes.yaml"
PUBLIC = "public"


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return load_route_table(SHIPPED)


# (method, path) -> the permission it needs, PUBLIC for no key, or None for 404.
EXPECTED = [
    ("GET", "/public/v1/time", PUBLIC),
    ("GET", "/public/v1/currencies", PUBLIC),
    ("GET", "/public/v1/instruments", PUBLIC),
    ("GET", "/public/v1/fees", PUBLIC),
    ("GET", "/public/v1/order-book/BTC_EUR", PUBLIC),
    ("GET", "/public/v1/candlesticks/BTC_EUR", PUBLIC),
    ("GET", "/public/v1/market-ticker", PUBLIC),
    ("GET", "/public/v1/market-ticker/BTC_EUR", PUBLIC),
    ("GET", "/public/v1/price-ticks/BTC_EUR", PUBLIC),
    ("GET", "/public/v1/account/balances", "read"),
    ("GET", "/public/v1/account/fees", "read"),
    ("POST", "/public/v1/account/fees", "trade"),
    ("GET", "/public/v1/account/trading-volume", "read"),
    ("GET", "/public/v1/account/orders", "read"),
    ("POST", "/public/v1/account/orders", "trade"),
    ("DELETE", "/public/v1/account/orders", "trade"),
    ("POST", "/public/v1/account/orders/cancel-all-after", "trade"),
    ("DELETE", "/public/v1/account/orders/cancel-all-after", "trade"),
    ("GET", "/public/v1/account/orders/client/abc", "read"),
    ("PUT", "/public/v1/account/orders/client/abc", "trade"),
    ("DELETE", "/public/v1/account/orders/client/abc", "trade"),
    ("GET", "/public/v1/account/orders/6894fe05-4071-49ca-813e-d88d3621e168", "read"),
    ("PUT", "/public/v1/account/orders/6894fe05", "trade"),
    ("DELETE", "/public/v1/account/orders/6894fe05", "trade"),
    ("GET", "/public/v1/account/orders/6894fe05/trades", "read"),
    ("GET", "/public/v1/account/trades", "read"),
    ("GET", "/public/v1/account/trades/abc-123", "read"),
    ("GET", "/public/v1/account/deposits", "read"),
    ("GET", "/public/v1/account/deposits/bitpanda", "read"),
    ("GET", "/public/v1/account/withdrawals", "read"),
    ("GET", "/public/v1/account/withdrawals/bitpanda", "read"),
    ("GET", "/public/v1/account/deposit/crypto/BTC", "withdraw"),
    ("POST", "/public/v1/account/deposit/crypto", "withdraw"),
    ("GET", "/public/v1/account/deposit/fiat/EUR", "withdraw"),
    ("POST", "/public/v1/account/withdraw/crypto", "withdraw"),
    ("POST", "/public/v1/account/withdraw/fiat", "withdraw"),
    # Default deny: unknown methods, unknown paths, wrong segment counts.
    ("PATCH", "/public/v1/account/orders", None),
    ("FETCH", "/public/v1/time", None),
    ("get", "/public/v1/time", None),
    ("HEAD", "/public/v1/time", None),
    ("POST", "/public/v1/time", None),
    ("DELETE", "/public/v1/account/balances", None),
    ("GET", "/public/v1/account/deposit/crypto", None),
    ("POST", "/public/v1/account/deposit/crypto/BTC", None),
    ("GET", "/public/v1/account/deposit/fiat/USD", None),
    ("GET", "/public/v1/order-book", None),
    ("GET", "/public/v1/order-book/BTC_EUR/extra", None),
    ("GET", "/public/v1/account/orders/a/trades/b", None),
    ("GET", "/public/v2/time", None),
    ("GET", "/public/v1", None),
    ("GET", "/", None),
    ("GET", "/public/v1/time/", None),  # the caller normalises first; exact here
]


@pytest.mark.parametrize(("method", "path", "expected"), EXPECTED)
def test_shipped_table(table: RouteTable, method: str, path: str, expected: str | None) -> None:
    route = table.match(method, path)
    if expected is None:
        assert route is None
    elif expected == PUBLIC:
        assert route is not None and route.is_public and route.permission is None
    else:
        assert route is not None and not route.is_public
        assert route.permission == expected


def test_literal_segment_beats_a_parameter(table: RouteTable) -> None:
    # Both .../orders/client/{client_id} and .../orders/{order_id}/trades fit this path.
    route = table.match("GET", "/public/v1/account/orders/client/trades")
    assert route is not None
    assert route.pattern == "/public/v1/account/orders/client/{client_id}"
    other = table.match("GET", "/public/v1/account/orders/abc/trades")
    assert other is not None and other.pattern == "/public/v1/account/orders/{order_id}/trades"


def test_static_route_beats_a_parameter(table: RouteTable) -> None:
    route = table.match("DELETE", "/public/v1/account/orders/cancel-all-after")
    assert route is not None and route.pattern == "/public/v1/account/orders/cancel-all-after"


def test_shipped_defaults(table: RouteTable) -> None:
    assert dict(table.permissions).keys() == {"read", "trade", "withdraw"}
    assert table.upstreams == {"default": "http://127.0.0.1:9000"}
    assert table.require_ip_allowlist == frozenset({"withdraw"})
    assert table.policy.max_key_lifetime_days is None
    assert table.policy.dormant_after_days is None
    assert table.source == SHIPPED
    private = table.match("GET", "/public/v1/account/balances")
    public = table.match("GET", "/public/v1/time")
    assert private is not None and public is not None
    assert private.rate_limit == RateLimit(200, 60.0, "account", "private")
    assert public.rate_limit == RateLimit(240, 60.0, "ip", "public")
    assert private.upstream == "http://127.0.0.1:9000"
    assert private.timeout is None


def test_route_line_points_into_the_file(table: RouteTable) -> None:
    route = table.match("GET", "/public/v1/account/balances")
    assert route is not None
    lines = SHIPPED.read_text().splitlines()
    assert lines[route.line - 1].strip() == "- path: /public/v1/account/balances"


def test_compile_pattern() -> None:
    regex, specificity = compile_pattern("/public/v1/order-book/{instrument_code}")
    assert specificity == (0, 0, 0, 1)
    assert regex.fullmatch("/public/v1/order-book/BTC_EUR")
    assert not regex.fullmatch("/public/v1/order-book/BTC/EUR")
    assert not regex.fullmatch("/public/v1/order-book/")
    dotted, _ = compile_pattern("/public/v1/a.b")
    assert not dotted.fullmatch("/public/v1/axb")  # literals are escaped


def test_table_built_by_hand() -> None:
    limit = RateLimit(10, 1.0, "key", "b")
    route = Route(pattern="/x/{id}", methods=frozenset({"GET"}), permission="read",
                  is_public=False, upstream="http://u", timeout=None, rate_limit=limit)
    table = RouteTable(permissions={"read": ""}, upstreams={"default": "http://u"},
                       routes=(route,))
    assert table.match("GET", "/x/1") is route
    assert table.match("GET", "/x") is None
    assert table.match("POST", "/x/1") is None
    assert limit.emission_interval == pytest.approx(0.1)


def test_shipped_withdrawal_route_checks_the_recipient_address(table: RouteTable) -> None:
    route = table.match("POST", "/public/v1/account/withdraw/crypto")
    assert route is not None
    assert route.withdraw_address == ("recipient", "address") and route.reads_body
    fiat = table.match("POST", "/public/v1/account/withdraw/fiat")
    assert fiat is not None and fiat.withdraw_address is None and not fiat.reads_body


def test_key_introspection_is_the_gateways_own_route(table: RouteTable) -> None:
    route = table.match("GET", "/gateway/v1/key")
    assert route is not None and route.local == "key_introspection"
    assert not route.is_public and route.permission is None
    assert route not in table.routes  # not counted as one of the file's routes
    assert table.match("POST", "/gateway/v1/key") is None
