"""Settings (gateway/config/settings.py): a temporary YAML file plus an explicit environ mapping."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from gateway.config.settings import (
    Settings,
    SettingsError,
    load_settings,
    parse_duration,
    redact_url,
    settings_warnings,
)


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("2d", 172800.0),
     ("30", 30.0), ("1.5h", 5400.0), (" 10 s ", 10.0), (0, 0.0), (7, 7.0), (0.5, 0.5)],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["soon", "-1s", "5 minutes", "", "ms", True, -3])
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_durations_in_yaml(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "key_cache_ttl: 250ms\nnegative_cache_ttl: 30s\n"
                           "confirm_link_ttl: 5m\ntombstone_ttl: 1h\nstore_timeout: 3\n")
    settings = load_settings(path, {})
    assert settings.key_cache_ttl == pytest.approx(0.25)
    assert settings.negative_cache_ttl == 30.0
    assert settings.confirm_link_ttl == 300.0
    assert settings.tombstone_ttl == 3600.0
    assert settings.store_timeout == 3.0
    assert settings.config_path == path


@pytest.mark.parametrize(
    ("value", "size"),
    [("8192", 8192), ("64kb", 65536), ("8k", 8192), ("10mb", 10 * 1024**2), ("10MB", 10 * 1024**2),
     ("1g", 1024**3), ("100b", 100)],
)
def test_sizes_in_yaml(tmp_path: Path, value: str, size: int) -> None:
    path = _yaml(tmp_path, f"max_body_size: {value}\n")
    assert load_settings(path, {}).max_body_size == size


@pytest.mark.parametrize("value", ["huge", "-1", "1.5mb", "10 parsecs"])
def test_bad_size_names_setting_and_value(tmp_path: Path, value: str) -> None:
    path = _yaml(tmp_path, f"max_header_size: '{value}'\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, {})
    assert caught.value.problems == [
        f"{path}:1: max_header_size has value '{value}': not a size (e.g. 8192, 64kb, 10mb)"
    ]


def test_shipped_settings_file_loads() -> None:
    shipped = Path(__file__).resolve().parents[4] / "config" / "gateway.yaml"
    settings = load_settings(shipped, {})
    assert settings.max_body_size == 10 * 1024**2
    assert settings.max_header_size == 8 * 1024
    assert settings.confirm_link_ttl == 1800.0
    assert settings.is_embedded


def test_environment_overrides_yaml(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "upstream_url: http://yaml.example\nrate_limits: on\n"
                           "redis_prefix: 'from-yaml:'\nadmin_url: http://admin.yaml\n")
    settings = load_settings(path, {
        "GATEWAY_UPSTREAM_URL": "https://api.exchange.example/",
        "GATEWAY_RATE_LIMITS": "off",
        "GATEWAY_REDIS_PREFIX": "from-env:",
        "GATEWAY_ADMIN_URL": "",  # empty: unset, the YAML stands
    })
    assert settings.upstream_url == "https://api.exchange.example"
    assert settings.rate_limits is False
    assert settings.redis_prefix == "from-env:"
    assert settings.admin_url == "http://admin.yaml"


def test_gateway_config_variable_names_the_file(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "key_cache_ttl: 1s\n")
    assert load_settings(None, {"GATEWAY_CONFIG": str(path)}).key_cache_ttl == 1.0


def test_named_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SettingsError) as caught:
        load_settings(missing, {})
    assert caught.value.problems == [f"{missing}: settings file not found"]
    with pytest.raises(SettingsError):
        load_settings(None, {"GATEWAY_CONFIG": str(missing)})


def test_every_bad_value_is_reported_together(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "key_cache_ttl: soon\nmax_body_size: huge\ncolour: blue\n"
                           "max_keys_per_user: -2\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, {
            "GATEWAY_RATE_LIMITS": "maybe",
            "GATEWAY_DATABASE_URL": "mysql://db.example/keygate",
            "GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8, banana",
            "GATEWAY_LOG_FORMAT": "xml",
        })
    problems = caught.value.problems
    assert f"{path}:3: unknown setting 'colour'" in problems
    assert (f"{path}:1: key_cache_ttl has value 'soon': not a duration (e.g. 30, 30s, 5m, 1h)"
            in problems)
    assert (f"{path}:2: max_body_size has value 'huge': not a size (e.g. 8192, 64kb, 10mb)"
            in problems)
    assert f"{path}:4: max_keys_per_user has value -2: negative" in problems
    assert "GATEWAY_RATE_LIMITS has value 'maybe': not on/off" in problems
    assert ("GATEWAY_DATABASE_URL has value 'mysql://db.example/keygate': "
            "not a URL with scheme postgres/postgresql") in problems
    assert "GATEWAY_LOG_FORMAT has value 'xml': not text or json" in problems
    proxies = [p for p in problems if p.startswith("GATEWAY_TRUSTED_PROXIES")]
    assert len(proxies) == 1
    assert proxies[0].startswith("GATEWAY_TRUSTED_PROXIES has value '10.0.0.0/8, banana': ")
    assert "banana" in proxies[0].split(": ", 1)[1]
    assert len(problems) == 8
    assert str(caught.value) == "\n".join(problems)


def test_unknown_yaml_setting_alone_is_refused(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "key_cache_tll: 5s\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, {})
    assert caught.value.problems == [f"{path}:1: unknown setting 'key_cache_tll'"]


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "- a\n- b\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, {})
    assert caught.value.problems == [f"{path}: expected a mapping of settings"]


def test_invalid_yaml_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "key_cache_ttl: [1s\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, {})
    assert caught.value.problems[0].startswith(f"{path}:2: not valid YAML")


def test_null_yaml_value_keeps_the_default(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "key_cache_ttl:\n")
    assert load_settings(path, {}).key_cache_ttl == Settings().key_cache_ttl


@pytest.mark.parametrize("which", ["GATEWAY_DATABASE_URL", "GATEWAY_REDIS_URL"])
def test_database_and_redis_urls_are_both_or_neither(tmp_path: Path, which: str) -> None:
    urls = {"GATEWAY_DATABASE_URL": "postgresql://u@db.example/keygate",
            "GATEWAY_REDIS_URL": "redis://cache.example:6379/0"}
    path = _yaml(tmp_path, "")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, {which: urls[which]})
    assert caught.value.problems == [
        "GATEWAY_DATABASE_URL and GATEWAY_REDIS_URL: set both, or neither for embedded mode"
    ]
    both = load_settings(path, urls)
    assert both.database_url == urls["GATEWAY_DATABASE_URL"]
    assert both.redis_url == urls["GATEWAY_REDIS_URL"]
    assert not both.is_embedded
    assert load_settings(path, {}).is_embedded


def test_trusted_proxies(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "trusted_proxies: [10.0.0.0/8, '2001:db8::/32']\n")
    assert load_settings(path, {}).trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    from_env = load_settings(path, {"GATEWAY_TRUSTED_PROXIES": "192.168.1.7, 172.16.0.0/12"})
    assert from_env.trusted_proxies == (
        ipaddress.ip_network("192.168.1.7/32"), ipaddress.ip_network("172.16.0.0/12"))
    assert load_settings(_yaml(tmp_path, ""), {}).trusted_proxies == ()


def test_old_peppers_mapping(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "old_key_peppers: {1: first}\nkey_pepper_version: 2\n")
    settings = load_settings(path, {"GATEWAY_KEY_PEPPER": "second-pepper-of-16+"})
    assert settings.old_key_peppers == {1: "first"}
    assert settings.key_pepper_version == 2
    assert settings.key_pepper == "second-pepper-of-16+"


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.key_cache_ttl = 1.0  # type: ignore[misc]
    shorter = settings.replace(key_cache_ttl=1.0)
    assert shorter.key_cache_ttl == 1.0 and settings.key_cache_ttl == 30.0


# --- secrets never repeated ------------------------------------------------------------------

SECRET = "RECOGNISABLE-S3CRET"


@pytest.mark.parametrize(("var", "value"), [
    ("GATEWAY_KEY_PEPPER", "S3CRET-short"),
    ("GATEWAY_SECRET_KEY", "S3CRET-short"),
    ("GATEWAY_UPSTREAM_SECRET", "S3CRET-short"),
    ("GATEWAY_DATABASE_URL", f"mysql://keygate:{SECRET}@db.example/keygate"),
    ("GATEWAY_DATABASE_URL", f"postgresql://keygate:{SECRET}@db.example:port/keygate"),
    ("GATEWAY_DATABASE_URL", f"postgresql//keygate:{SECRET}@db.example/keygate"),
    ("GATEWAY_DATABASE_URL", f"postgres://keygate@db.example:0/keygate?password={SECRET}&x=1"),
    ("GATEWAY_REDIS_URL", f"http://:{SECRET}@cache.example:6379/0"),
    ("GATEWAY_REDIS_URL", f"redis://:{SECRET}/with/slash@cache.example:6379/0"),
    ("GATEWAY_SMTP_URL", f"smtp://mailer:{SECRET}@"),
    ("GATEWAY_SMTP_URL", f"smtp://mailer:{SECRET}@mail.example:70000"),
])
def test_a_bad_secret_is_named_but_never_repeated(var: str, value: str) -> None:
    env = {var: value}
    if var in ("GATEWAY_DATABASE_URL", "GATEWAY_REDIS_URL"):  # the other one, valid
        env.setdefault("GATEWAY_DATABASE_URL", "postgresql://u@db.example/keygate")
        env.setdefault("GATEWAY_REDIS_URL", "redis://cache.example:6379/0")
    with pytest.raises(SettingsError) as caught:
        load_settings(None, env)
    text = "\n".join(caught.value.problems)
    assert var in text
    assert "S3CRET" not in text
    if "URL" in var:
        assert "***" in text  # the URL is shown, its password hidden


def test_secrets_in_the_yaml_file_are_never_repeated(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "secret_key: S3CRET-short\nkey_pepper: [S3CRET, list]\n"
                           "old_key_peppers: {x: S3CRET-old}\n"
                           f"database_url: 'mysql://u:{SECRET}@db/k'\n"
                           f"redis_url: 'redis://:{SECRET}@cache:6379/0'\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, {})
    problems = caught.value.problems
    assert [p.split(": ", 1)[0] for p in problems] == [
        f"{path}:{n}" for n in (1, 2, 3, 4)]
    assert problems[0].startswith(f"{path}:1: secret_key: too short to be a secret (16 "
                                  "characters at least; e.g. python3 -c 'import secrets;")
    assert problems[3] == (f"{path}:4: database_url has value 'mysql://u:***@db/k': "
                           "not a URL with scheme postgres/postgresql")
    assert "S3CRET" not in "\n".join(problems)


def test_unparsable_yaml_does_not_quote_the_line(tmp_path: Path) -> None:
    path = _yaml(tmp_path, f"routes_path: config/routes.yaml\nkey_pepper: \"{SECRET}\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, {})
    [line] = caught.value.problems
    assert line.startswith(f"{path}:") and "not valid YAML" in line
    assert SECRET not in line


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:PW@h/db", "postgresql://u:***@h/db"),
    ("redis://:PW@h:6379/0", "redis://:***@h:6379/0"),
    ("smtp://user@mail.example", "smtp://user@mail.example"),
    ("postgresql://h/db?sslmode=require&password=PW", "postgresql://h/db?sslmode=require&password=***"),
    ("u:P@W@h/db", "u:***@h/db"),
    ("https://api.exchange.example", "https://api.exchange.example"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(("value", "reason"), [
    ("https://api.exchange.example/v1", "not an origin"),
    ("https://api.exchange.example?x=1", "not an origin"),
    ("https://user:pw@api.exchange.example", "not an origin"),
    ("https://api.exchange.example:99999", "the port is not a number"),
    ("https://api.exchange.example:https", "the port is not a number"),
    ("https://", "not a URL"),
    ("https://:443", "no host name"),
    ("https://exa mple.com", "the host name is not valid"),
    ("ftp://api.exchange.example", "not a URL with scheme http/https"),
])
def test_upstream_url_must_be_an_origin(value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, {"GATEWAY_UPSTREAM_URL": value})
    [line] = caught.value.problems
    assert line.startswith("GATEWAY_UPSTREAM_URL has value ") and reason in line


@pytest.mark.parametrize("value", ["http://127.0.0.1:9000", "https://[::1]:8443/",
                                   "https://api.exchange.example", "http://sandbox_1:9000"])
def test_good_upstream_urls(value: str) -> None:
    assert load_settings(None, {"GATEWAY_UPSTREAM_URL": value}).upstream_url == value.rstrip("/")


def test_long_enough_secrets_are_taken() -> None:
    settings = load_settings(None, {"GATEWAY_KEY_PEPPER": "p" * 16, "GATEWAY_SECRET_KEY": "s" * 43})
    assert (settings.key_pepper, settings.secret_key) == ("p" * 16, "s" * 43)


# --- warnings ------------------------------------------------------------------------------------


def test_trusted_proxy_ranges_are_warned_about() -> None:
    settings = load_settings(None, {
        "GATEWAY_TRUSTED_PROXIES": "10.0.0.7, 10.0.0.0/8, 2001:db8::1, 2001:db8::/64, 10.1.1.1/32"})
    warnings = settings_warnings(settings)
    assert len(warnings) == 2
    assert warnings[0].startswith(
        "GATEWAY_TRUSTED_PROXIES / trusted_proxies: 10.0.0.0/8 is a range")
    assert "any host in it can claim any client IP" in warnings[0]
    assert "(/32)" in warnings[0]
    assert "2001:db8::/64" in warnings[1] and "(/128)" in warnings[1]
    assert settings_warnings(load_settings(None, {"GATEWAY_TRUSTED_PROXIES": "10.0.0.7"})) == []
    assert settings_warnings(Settings()) == []
