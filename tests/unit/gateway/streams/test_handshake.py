"""The opening handshake (gateway/streams/handshake.py) from parsed heads: no I/O."""

from __future__ import annotations

import pytest

from gateway.http.errors import MalformedRequest
from gateway.http.request import RequestView
from gateway.streams.handshake import (
    NotAnUpgrade,
    VersionUnsupported,
    accept_for,
    check_upgrade,
    kept_headers,
    switching_protocols,
    upgrade_request_framing,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def _view(method: str = "GET", version: str = "1.1", upgrade: bytes | None = b"websocket",
          headers: list[tuple[bytes, bytes]] | None = None) -> RequestView:
    view = RequestView(method, b"/streams", "127.0.0.1", "http")
    view.version = version
    view.upgrade = upgrade
    view.headers = headers if headers is not None else [
        (b"Sec-WebSocket-Key", KEY), (b"Sec-WebSocket-Version", b"13"), (b"Origin", b"x")]
    return view


def test_accept_is_the_rfc_example() -> None:
    assert accept_for(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3


def test_a_valid_upgrade_gives_its_key() -> None:
    assert check_upgrade(_view(), is_upgrade=True) == KEY
    assert check_upgrade(_view(upgrade=b"WebSocket"), is_upgrade=True) == KEY


@pytest.mark.parametrize("view", [
    _view(method="POST"), _view(version="1.0"), _view(upgrade=None), _view(upgrade=b"h2c"),
])
def test_not_an_upgrade(view: RequestView) -> None:
    with pytest.raises(NotAnUpgrade) as refused:
        check_upgrade(view, is_upgrade=True)
    assert refused.value.status == 426
    assert refused.value.headers()["Upgrade"] == "websocket"


def test_without_connection_upgrade_it_is_not_an_upgrade() -> None:
    with pytest.raises(NotAnUpgrade):
        check_upgrade(_view(), is_upgrade=False)


@pytest.mark.parametrize("versions", [[], [b"8"], [b"13", b"13"]])
def test_only_version_13(versions: list[bytes]) -> None:
    headers = [(b"Sec-WebSocket-Key", KEY)] + [(b"Sec-WebSocket-Version", v) for v in versions]
    with pytest.raises(VersionUnsupported) as refused:
        check_upgrade(_view(headers=headers), is_upgrade=True)
    assert refused.value.headers()["Sec-WebSocket-Version"] == "13"


@pytest.mark.parametrize("keys", [[], [b"short"], [b"!!!!" * 6], [KEY, KEY],
                                  [b"dGhlIHNhbXBsZSBub25jZSE="]])
def test_a_bad_key_is_a_malformed_request(keys: list[bytes]) -> None:
    headers = [(b"Sec-WebSocket-Version", b"13")] + [(b"Sec-WebSocket-Key", k) for k in keys]
    with pytest.raises(MalformedRequest):
        check_upgrade(_view(headers=headers), is_upgrade=True)


def test_the_101_answer() -> None:
    answer = switching_protocols(KEY, "req-1")
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
    assert b"X-Request-Id: req-1\r\n" in answer and answer.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Extensions" not in answer  # no compression, ever


def test_the_client_handshake_headers_stay_on_its_leg() -> None:
    kept = kept_headers([(b"Sec-WebSocket-Key", KEY), (b"SEC-WEBSOCKET-EXTENSIONS", b"x"),
                         (b"Origin", b"o"), (b"User-Agent", b"u")])
    assert kept == [(b"Origin", b"o"), (b"User-Agent", b"u")]


def test_each_upstream_upgrade_has_a_fresh_key() -> None:
    (one, framing), (two, _) = upgrade_request_framing(), upgrade_request_framing()
    assert one != two and len(one) == 24
    assert b"Sec-WebSocket-Key: " + one + b"\r\n" in framing
    assert b"Sec-WebSocket-Version: 13\r\n" in framing and b"Upgrade: websocket\r\n" in framing
