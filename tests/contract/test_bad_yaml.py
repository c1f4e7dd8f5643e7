"""Contract: every bad route file is refused with these exact `file:line: message` lines.

One test per fixture under `fixtures/`, through `load_route_table`, and the same fixtures
through the real `gateway check-config` command (exit 1, the same lines on stderr).
Needs nothing but Python: no PostgreSQL, no Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.route_file import ConfigError, load_route_table

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Fixture name -> the lines `check-config` prints, `{file}` standing for the path it was given.
EXPECTED: dict[str, list[str]] = {
    "bad_streams.yaml": [
        "{file}:8: streams.upstream: 'http://127.0.0.1:9000/streams' is not a WebSocket URL "
        "such as wss://streams.example.com/streams",
        "{file}:13: streams.routes[0].channels.ACCOUNT_HISTORY: unknown permission 'admin' "
        "(or public)",
        "{file}:14: streams.routes[0].channels: invalid channel name 'order_book' (capital "
        "letters, digits and _)",
        "{file}:16: streams.routes[0].messages: AUTHENTICATE is read by the gateway itself on "
        "every stream; it takes no permission here",
        "{file}:17: streams.routes[1]: /public/v1/time is also a REST route (routes[0])",
        "{file}:20: streams.routes[2].path: a stream path is matched exactly: no parameters in "
        "'/feeds/{name}'",
        "{file}:22: streams.routes[3]: 'channels' is required (channel: permission or public)",
        "{file}:23: streams.routes[3]: unknown field 'every'",
    ],
    "unknown_method.yaml": [
        "{file}:8: routes[0].methods[1]: unknown method 'FETCH'",
        "{file}:11: routes[1].methods[0]: unknown method 'get'",
    ],
    "unknown_permission.yaml": [
        "{file}:9: routes[0].permission: unknown permission 'admin'",
    ],
    "duplicate_route.yaml": [
        "{file}:10: routes[1]: GET /public/v1/account/orders/{id} duplicates routes[0]",
        "{file}:13: routes[2]: DELETE /public/v1/account/orders/{order_id} duplicates routes[1]",
    ],
    "public_with_permission.yaml": [
        "{file}:10: routes[0]: a public route takes no permission",
    ],
    "missing_permission.yaml": [
        "{file}:7: routes[0]: needs a 'permission', or 'public: true'",
    ],
    "bad_path_template.yaml": [
        "{file}:7: routes[0].path: path 'public/v1/time' must start with / and have no empty "
        "segment",
        "{file}:10: routes[1].path: invalid path segment '{instrument code}' in "
        "'/public/v1/order-book/{instrument code}'",
        "{file}:13: routes[2].path: invalid path segment '..' in '/public/v1/../time'",
        "{file}:16: routes[3].path: path '/public/v1/time/' must start with / and have no "
        "empty segment",
    ],
    "duplicate_parameter.yaml": [
        "{file}:7: routes[0].path: duplicate parameter {id} in "
        "'/public/v1/account/orders/{id}/trades/{id}'",
    ],
    "bad_rate_limit.yaml": [
        "{file}:7: rate_limits.private.limit: expected a positive whole number, not '0'",
        "{file}:8: rate_limits.public.period: 'soon' is not a duration (e.g. 30, 30s, 5m, 1h)",
        "{file}:10: rate_limits.permissions.trade: 'limit' is required",
        "{file}:15: routes[0].rate_limit.per: expected one of account, ip, key",
    ],
    "unknown_section.yaml": [
        "{file}:6: unknown section 'limits'",
    ],
    "invalid_syntax.yaml": [
        "{file}:9: invalid YAML: expected ',' or ']', but got ':'",
    ],
    "control_character.yaml": [
        "{file}:10: invalid YAML: unacceptable character #x0007",
    ],
    "not_utf8.yaml": [
        "{file}:2: not UTF-8 text",
    ],
    "empty.yaml": [
        "{file}:1: the file is empty",
    ],
    "unknown_upstream.yaml": [
        "{file}:10: routes[0].upstream: unknown upstream 'backup'",
    ],
    "missing_default_upstream.yaml": [
        "{file}:1: upstreams: an upstream named 'default' is required "
        "(or set GATEWAY_UPSTREAM_URL)",
    ],
    "policy_bad_lifecycle.yaml": [
        "{file}:7: policy.max_key_lifetime_days: expected a positive whole number, not '-30'",
        "{file}:8: policy.dormant_after_days: expected a positive whole number, not '1.5'",
        "{file}:13: routes[0]: withdraw_address needs methods with a body (POST, PUT or PATCH)",
        "{file}:14: routes[1]: /gateway/v1/key is answered by the gateway itself (key "
        "introspection); remove this route",
    ],
    "policy_unknown_permission.yaml": [
        "{file}:7: policy.require_ip_allowlist[1]: unknown permission 'withdraw'",
    ],
    "bad_permission_name.yaml": [
        "{file}:2: permissions: invalid permission name 'Read-All' (lowercase letters, digits, "
        "- and _)",
    ],
    "unknown_route_field.yaml": [
        "{file}:9: routes[0]: unknown field 'perm'",
        "{file}:13: routes[1].timeout: must be more than zero",
    ],
    "missing_sections.yaml": [
        # In file order; problems on one line keep the order they were found in.
        "{file}:1: missing section 'permissions'",
        "{file}:1: upstreams: an upstream named 'default' is required "
        "(or set GATEWAY_UPSTREAM_URL)",
        "{file}:1: missing section 'routes'",
        "{file}:2: upstreams.default: 'ftp://127.0.0.1' is not an origin such as "
        "https://api.example.com",
    ],
}

FIXTURE_NAMES = sorted(p.name for p in FIXTURES.glob("*.yaml"))


def _expected(name: str, file: str) -> list[str]:
    return [line.replace("{file}", file, 1) for line in EXPECTED[name]]


def _check_config(name: str, extra_env: dict[str, str] | None = None,
                  ) -> subprocess.CompletedProcess[str]:
    """`gateway check-config NAME` run in the fixtures folder, with no GATEWAY_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", name],
        cwd=FIXTURES, env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def test_every_fixture_has_expected_lines() -> None:
    assert FIXTURE_NAMES == sorted(EXPECTED)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_loader_reports_exact_lines(name: str) -> None:
    path = FIXTURES / name
    with pytest.raises(ConfigError) as caught:
        load_route_table(path)
    assert caught.value.problems == _expected(name, str(path))
    assert str(caught.value) == "\n".join(caught.value.problems)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_check_config_cli_reports_exact_lines(name: str) -> None:
    result = _check_config(name)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == _expected(name, name)


def test_check_config_cli_upstream_url_supplies_default_upstream() -> None:
    result = _check_config("missing_default_upstream.yaml",
                           {"GATEWAY_UPSTREAM_URL": "https://api.exchange.example"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("missing_default_upstream.yaml: ok (1 routes")


def test_check_config_cli_accepts_the_shipped_route_file() -> None:
    shipped = FIXTURES.parents[2] / "config" / "routes.yaml"
    result = _check_config(str(shipped))
    assert result.returncode == 0, result.stderr
    assert "permissions: read, trade, withdraw" in result.stdout


def test_missing_file_is_reported_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_route_table(path)
    assert caught.value.problems == [f"{path}:1: cannot read: No such file or directory"]
