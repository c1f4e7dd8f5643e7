"""The route YAML loader (gateway/config/route_file.py): valid files, and the checkers."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.route_file import ConfigError, load_route_table, parse_route_table
from gateway.config.routes import RateLimit, RouteTable

BASE = """\
permissions:
  read: Read
  trade: Trade
upstreams:
  default: http://127.0.0.1:9000/
"""


def _table(extra: str, routes: str) -> RouteTable:
    return parse_route_table(BASE + extra + "routes:\n" + routes)


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_route_table(text)
    return caught.value.problems


def test_a_permission_added_in_yaml_alone_works() -> None:
    text = BASE.replace("  trade: Trade\n", "  trade: Trade\n  staking: Stake and unstake\n")
    table = parse_route_table(text + """\
routes:
  - path: /public/v1/account/staking/{currency}
    methods: [POST]
    permission: staking
""")
    assert table.permissions["staking"] == "Stake and unstake"
    route = table.match("POST", "/public/v1/account/staking/ETH")
    assert route is not None and route.permission == "staking"


def test_upstreams_trailing_slash_and_named_upstream() -> None:
    text = BASE + "  ledger: https://ledger.example:8443\n" + """\
routes:
  - path: /public/v1/time
    methods: [GET]
    public: true
  - path: /public/v1/account/balances
    methods: [GET]
    permission: read
    upstream: ledger
"""
    loaded = parse_route_table(text)
    time_route = loaded.match("GET", "/public/v1/time")
    balances = loaded.match("GET", "/public/v1/account/balances")
    assert time_route is not None and time_route.upstream == "http://127.0.0.1:9000"
    assert balances is not None and balances.upstream == "https://ledger.example:8443"


def test_upstream_override_replaces_default_only() -> None:
    text = BASE + "  ledger: https://ledger.example\n" + """\
routes:
  - path: /public/v1/time
    methods: [GET]
    public: true
  - path: /public/v1/account/balances
    methods: [GET]
    permission: read
    upstream: ledger
  - path: /public/v1/account/fees
    methods: [GET]
    permission: read
    upstream: default
"""
    table = parse_route_table(text, upstream_override="https://api.exchange.example/")
    assert table.upstreams["default"] == "https://api.exchange.example"
    for path, origin in [("/public/v1/time", "https://api.exchange.example"),
                         ("/public/v1/account/balances", "https://ledger.example"),
                         ("/public/v1/account/fees", "https://api.exchange.example")]:
        route = table.match("GET", path)
        assert route is not None and route.upstream == origin


def test_upstream_override_supplies_a_missing_default() -> None:
    text = "permissions: {read: Read}\nroutes:\n  - {path: /a, methods: [GET], public: true}\n"
    assert _problems(text) == [
        "routes.yaml:1: upstreams: an upstream named 'default' is required "
        "(or set GATEWAY_UPSTREAM_URL)"
    ]
    table = parse_route_table(text, upstream_override="http://up.example")
    route = table.match("GET", "/a")
    assert route is not None and route.upstream == "http://up.example"


def test_per_route_rate_limit_and_timeout() -> None:
    table = _table("", """\
  - path: /public/v1/account/orders
    methods: [POST, DELETE]
    permission: trade
    timeout: 250ms
    rate_limit: {limit: 5, period: 1s, per: key}
  - path: /public/v1/account/orders
    methods: [GET]
    permission: read
    timeout: 2
""")
    post = table.match("POST", "/public/v1/account/orders")
    delete = table.match("DELETE", "/public/v1/account/orders")
    get = table.match("GET", "/public/v1/account/orders")
    assert post is not None and post is delete
    assert post.timeout == pytest.approx(0.25)
    assert post.rate_limit == RateLimit(5, 1.0, "key", "route:0")
    assert get is not None and get.timeout == 2.0
    assert get.rate_limit == RateLimit(200, 60.0, "account", "private")


def test_rate_limit_defaults_to_per_account_and_a_minute() -> None:
    table = _table("", """\
  - path: /a
    methods: [GET]
    permission: read
    rate_limit: {limit: 7}
""")
    route = table.match("GET", "/a")
    assert route is not None and route.rate_limit == RateLimit(7, 60.0, "account", "route:0")


def test_section_defaults_and_per_permission_limits() -> None:
    table = _table("""\
rate_limits:
  private: {limit: 100, period: 10s}
  public: {limit: 50, period: 1m, per: ip}
  permissions:
    trade: {limit: 20, period: 1s, per: key}
""", """\
  - path: /public/v1/time
    methods: [GET]
    public: true
  - path: /public/v1/account/balances
    methods: [GET]
    permission: read
  - path: /public/v1/account/orders
    methods: [POST]
    permission: trade
  - path: /public/v1/account/orders/{id}
    methods: [DELETE]
    permission: trade
""")
    public = table.match("GET", "/public/v1/time")
    read = table.match("GET", "/public/v1/account/balances")
    post = table.match("POST", "/public/v1/account/orders")
    delete = table.match("DELETE", "/public/v1/account/orders/1")
    assert public is not None and public.rate_limit == RateLimit(50, 60.0, "ip", "public")
    assert read is not None and read.rate_limit == RateLimit(100, 10.0, "account", "private")
    trade_limit = RateLimit(20, 1.0, "key", "permission:trade")
    # Every route needing `trade` shares one bucket.
    assert post is not None and post.rate_limit == trade_limit
    assert delete is not None and delete.rate_limit == trade_limit


def test_rate_limits_permissions_must_name_a_declared_permission() -> None:
    text = BASE + "rate_limits:\n  permissions:\n    withdraw: {limit: 1}\nroutes: []\n"
    assert _problems(text) == ["routes.yaml:8: rate_limits.permissions: unknown permission "
                               "'withdraw'"]


def test_unknown_rate_limits_field() -> None:
    text = BASE + "rate_limits:\n  global: {limit: 1}\nroutes: []\n"
    assert _problems(text) == ["routes.yaml:7: rate_limits: unknown field 'global' "
                               "(expected private, public or permissions)"]


def test_policy_require_ip_allowlist() -> None:
    table = _table("policy:\n  require_ip_allowlist: [trade]\n", "  - {path: /a, methods: "
                   "[GET], public: true}\n")
    assert table.require_ip_allowlist == frozenset({"trade"})


def test_policy_lifetime_and_dormancy() -> None:
    table = _table("policy:\n  max_key_lifetime_days: 90\n  dormant_after_days: 30\n",
                   "  - {path: /a, methods: [GET], public: true}\n")
    assert table.policy.max_key_lifetime_days == 90
    assert table.policy.dormant_after_days == 30
    assert table.policy.dormant_after == 30 * 86400.0


def test_policy_problems_are_reported_with_their_lines() -> None:
    text = BASE + ("policy:\n  max_key_lifetime_days: 0\n  dormant_after_days: soon\n"
                   "  expire_keys: yes\n  require_ip_allowlist: [trade, fly]\nroutes: []\n")
    assert _problems(text) == [
        "routes.yaml:7: policy.max_key_lifetime_days: expected a positive whole number, not '0'",
        "routes.yaml:8: policy.dormant_after_days: expected a positive whole number, not 'soon'",
        "routes.yaml:9: policy: unknown field 'expire_keys' (expected require_ip_allowlist, "
        "max_key_lifetime_days or dormant_after_days)",
        "routes.yaml:10: policy.require_ip_allowlist[1]: unknown permission 'fly'",
    ]


def test_withdraw_address_names_where_the_body_keeps_it() -> None:
    table = _table("", "  - {path: /w, methods: [POST], permission: trade, "
                       "withdraw_address: to.wallet.id}\n")
    route = table.match("POST", "/w")
    assert route is not None and route.withdraw_address == ("to", "wallet", "id")
    assert route.reads_body


def test_the_exchanges_withdrawal_route_checks_its_address_by_default() -> None:
    table = _table("", "  - {path: /public/v1/account/withdraw/crypto, methods: [POST], "
                       "permission: trade}\n")
    route = table.match("POST", "/public/v1/account/withdraw/crypto")
    assert route is not None and route.withdraw_address == ("recipient", "address")


@pytest.mark.parametrize(("route", "message"), [
    ("{path: /w, methods: [GET], permission: read, withdraw_address: a.b}",
     "routes[0]: withdraw_address needs methods with a body (POST, PUT or PATCH)"),
    ("{path: /w, methods: [POST], public: true, withdraw_address: a.b}",
     "routes[0]: a public route has no key to check addresses against"),
    ("{path: /w, methods: [POST], permission: read, withdraw_address: 'a..b'}",
     "routes[0].withdraw_address: 'a..b' is not a dotted path of JSON keys such as "
     "recipient.address"),
    ("{path: /gateway/v1/key, methods: [GET], permission: read}",
     "routes[0]: /gateway/v1/key is answered by the gateway itself (key introspection); "
     "remove this route"),
])
def test_bad_withdraw_address_and_reserved_paths(route: str, message: str) -> None:
    assert _problems(BASE + "routes:\n  - " + route + "\n") == [f"routes.yaml:7: {message}"]


def test_empty_route_list_is_valid() -> None:
    table = parse_route_table(BASE + "routes: []\n")
    assert table.routes == ()
    assert table.match("GET", "/public/v1/time") is None


def test_every_problem_is_reported_not_just_the_first() -> None:
    problems = _problems(BASE + """\
routes:
  - path: /a
    methods: [FETCH]
    public: true
  - path: /b
    methods: [GET]
    permission: nope
  - path: /c
    methods: []
    public: true
  - path: /d
    methods: [GET]
    public: maybe
  - methods: [GET]
    public: true
""")
    assert problems == [
        "routes.yaml:8: routes[0].methods[0]: unknown method 'FETCH'",
        "routes.yaml:12: routes[1].permission: unknown permission 'nope'",
        "routes.yaml:14: routes[2].methods: at least one method is needed",
        "routes.yaml:18: routes[3].public: expected true or false, not 'maybe'",
        "routes.yaml:19: routes[4]: 'path' is required",
    ]


def test_same_path_different_methods_is_not_a_duplicate() -> None:
    table = _table("", """\
  - {path: "/x/{id}", methods: [GET], permission: read}
  - {path: "/x/{other}", methods: [DELETE], permission: trade}
""")
    get, delete = table.match("GET", "/x/1"), table.match("DELETE", "/x/1")
    assert get is not None and get.permission == "read"
    assert delete is not None and delete.permission == "trade"


def test_duplicate_yaml_key_is_refused() -> None:
    assert _problems(BASE + "routes:\n  - path: /a\n    path: /b\n    methods: [GET]\n"
                     "    public: true\n") == [
        "routes.yaml:8: routes[0]: duplicate key 'path'"
    ]


def test_top_level_must_be_a_mapping() -> None:
    assert _problems("- a\n- b\n") == ["routes.yaml:1: expected a mapping"]


def test_file_name_is_the_path_given(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(BASE + "routes:\n  - {path: /a, methods: [GET]}\n")
    with pytest.raises(ConfigError) as caught:
        load_route_table(path)
    assert caught.value.problems == [f"{path}:7: routes[0]: needs a 'permission', or "
                                     "'public: true'"]


def test_unsafe_yaml_tags_are_not_constructed() -> None:
    # compose() never builds Python objects: a tag is just an unknown scalar here.
    problems = _problems(BASE + "routes:\n  - path: !!python/object/apply:os.system [id]\n"
                         "    methods: [GET]\n    public: true\n")
    assert problems == ["routes.yaml:7: routes[0].path: expected a single value"]
