"""The route file's `streams:` section (gateway/config/route_file.py) and the stream
settings (gateway/config/settings.py): what loads, and what each bad value is told."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.route_file import ConfigError, load_route_table, parse_route_table
from gateway.config.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[4]
BASE = """\
permissions:
  read: Read
  trade: Trade
upstreams:
  default: http://127.0.0.1:9000
routes:
  - {path: /public/v1/time, methods: [GET], public: true}
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_route_table(BASE + text)
    return caught.value.problems


def test_the_shipped_streams() -> None:
    table = load_route_table(ROOT / "config" / "routes.yaml")
    stream = table.streams["/streams"]
    assert stream.upstream == "ws://127.0.0.1:9000/streams"
    assert stream.channels == {
        "MARKET_TICKER": None, "ORDER_BOOK": None, "PRICE_TICKS": None, "CANDLESTICKS": None,
        "ACCOUNT_HISTORY": "read", "TRADING": "read", "ORDERS": "trade"}
    assert stream.messages == {"CREATE_ORDER": "trade", "CANCEL_ORDER": "trade"}


def test_the_override_replaces_the_default_stream_upstream_only() -> None:
    text = BASE + """\
streams:
  upstream: ws://127.0.0.1:9000/streams
  routes:
    - {path: /streams, channels: {MARKET_TICKER: public}}
    - {path: /own, channels: {MARKET_TICKER: public}, upstream: "wss://feed.example/x?v=2"}
"""
    table = parse_route_table(text, stream_upstream_override="wss://streams.example/streams")
    assert table.streams["/streams"].upstream == "wss://streams.example/streams"
    assert table.streams["/own"].upstream == "wss://feed.example/x?v=2"


def test_no_default_stream_upstream_is_fine_with_the_override() -> None:
    text = BASE + "streams:\n  routes:\n    - {path: /streams, channels: {ORDERS: trade}}\n"
    assert _problems(text[len(BASE):]) == [
        "routes.yaml:10: streams.routes[0]: needs an 'upstream', or a default one in "
        "streams.upstream (or set GATEWAY_STREAM_UPSTREAM_URL)"]
    table = parse_route_table(text, stream_upstream_override="ws://127.0.0.1:1/s")
    assert table.streams["/streams"].channels == {"ORDERS": "trade"}


def test_a_stream_path_declared_twice() -> None:
    problems = _problems("""\
streams:
  upstream: ws://127.0.0.1:9000/streams
  routes:
    - {path: /streams, channels: {MARKET_TICKER: public}}
    - {path: /streams, channels: {ORDERS: trade}}
""")
    assert problems == ["routes.yaml:12: streams.routes[1]: stream path /streams is declared "
                        "twice"]


@pytest.mark.parametrize(("value", "message"), [
    ("ws://user:pw@host/s", "is not a WebSocket URL"),
    ("ws://host:99999/s", "is not a WebSocket URL"),
    ("wss:///s", "is not a WebSocket URL"),
])
def test_bad_stream_urls(value: str, message: str) -> None:
    (problem,) = _problems(f"streams:\n  upstream: {value}\n  routes: []\n")
    assert problem.startswith("routes.yaml:9: streams.upstream: ") and message in problem


def test_stream_settings_from_yaml_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("stream_max_message_size: 64kb\nstream_messages_per_second: 2.5\n"
                    "stream_idle_timeout: 500ms\nstream_send_buffer: 1mb\n")
    settings = load_settings(path, {
        "GATEWAY_STREAM_UPSTREAM_URL": "wss://streams.exchange.example/streams"})
    assert settings.stream_max_message_size == 64 * 1024
    assert settings.stream_messages_per_second == 2.5
    assert settings.stream_idle_timeout == 0.5
    assert settings.stream_send_buffer == 1024 * 1024
    assert settings.stream_upstream_url == "wss://streams.exchange.example/streams"


@pytest.mark.parametrize(("env", "problem"), [
    ({"GATEWAY_STREAM_UPSTREAM_URL": "https://x.example/streams"},
     "GATEWAY_STREAM_UPSTREAM_URL has value 'https://x.example/streams': not a URL with "
     "scheme ws/wss"),
    ({"GATEWAY_STREAM_UPSTREAM_URL": "wss://bob:secret@x.example/s"},
     "GATEWAY_STREAM_UPSTREAM_URL has value 'wss://bob:***@x.example/s': not a WebSocket URL "
     "such as wss://streams.exchange.example/streams (no user, no fragment)"),
])
def test_bad_stream_upstream_url_is_named_without_its_password(
    tmp_path: Path, env: dict[str, str], problem: str
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("{}\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, env)
    assert caught.value.problems == [problem]


def test_a_rate_must_be_positive(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("stream_messages_per_second: 0\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, {})
    assert caught.value.problems == [
        f"{path}:1: stream_messages_per_second has value 0: must be more than zero"]
