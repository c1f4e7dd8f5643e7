"""Request path normalisation and refusal (gateway/http/paths.py)."""

from __future__ import annotations

import json

import pytest

from gateway.http.errors import IllegalChars
from gateway.http.paths import normalise_path


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("/public/v1/time", "/public/v1/time"),
        ("/public/v1/./time", "/public/v1/time"),
        ("/public/v1//time", "/public/v1/time"),
        ("//public///v1/time", "/public/v1/time"),
        ("/public/v1/x/../time", "/public/v1/time"),
        ("/public/v1/x/y/../../time", "/public/v1/time"),
        ("/../../public/v1/time", "/public/v1/time"),  # cannot climb above the root
        ("/public/v1/time/", "/public/v1/time"),
        ("/public/v1/time/.", "/public/v1/time"),
        ("/public/v1/account/orders/client/..", "/public/v1/account/orders"),
        ("/public/v1/order-book/BTC_EUR", "/public/v1/order-book/BTC_EUR"),
        ("/public/v1/a%20b", "/public/v1/a%20b"),  # a harmless escape is kept as sent
        ("/public/v1/a%c3%a9", "/public/v1/a%c3%a9"),  # other escapes: as sent
        # Escapes of unreserved characters are the characters themselves (RFC 3986 6.2.2.2).
        ("/public/v1/account/orders/%63ancel-all-after",
         "/public/v1/account/orders/cancel-all-after"),
        ("/public/v1/account/orders/%63lient/x", "/public/v1/account/orders/client/x"),
        ("/public/v1/%74%69%6D%65", "/public/v1/time"),
        ("/public/v1/a%2Db%5Fc%7Ed", "/public/v1/a-b_c~d"),
        ("/public/v1/a%2B", "/public/v1/a%2B"),  # '+' is reserved: kept escaped
        ("/public/v1/x...y/~me", "/public/v1/x...y/~me"),
        ("/", "/"),
    ],
)
def test_normalises(raw: str, normalised: str) -> None:
    assert normalise_path(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "/public/v1%2Ftime",  # encoded slash
        "/public/v1%2ftime",
        "/public/v1%5Ctime",  # encoded backslash
        "/public/v1%5ctime",
        "/public/v1/%2e%2e/time",  # encoded dots
        "/public/v1/%2E/time",
        "/public/v1/.%2e/time",
        "/public/v1/time%00",  # NUL
        "/public/v1/time;jsessionid=abc",  # path parameters
        "/public/v1/time;",
        "/public/v1\\time",  # backslash
        "/public/v1/%25 2e",
        "/public/v1/%252e%252e/time",  # double encoding
        "/public/v1/time%",  # broken escapes
        "/public/v1/time%2",
        "/public/v1/time%zz",
        "/public/v1/tíme",  # raw non-ASCII
        "/public/v1/\u2025/time",
        "/public/v1/time\x00",
        "/public/v1/ti me",  # raw space
        "/public/v1/time\r\nX: y",
        "/public/v1/time?x=1",  # the caller strips the query; a '?' here is not a path
        "/public/v1/time#frag",
        "http://x/public/v1/time",  # absolute-form
        "http://x/",
        "*",
        "",
        "public/v1/time",
    ],
)
def test_refuses(raw: str) -> None:
    with pytest.raises(IllegalChars) as caught:
        normalise_path(raw)
    assert caught.value.status == 400
    assert caught.value.code == "ILLEGAL_CHARS"


def test_a_normalised_path_never_needs_json_escaping() -> None:
    """The access log writes matched (normalised) paths into JSON as they are."""
    for code in range(0x3000):  # ASCII, Latin, separators, and far past them
        raw = f"/public/v1/a{chr(code)}b"
        try:
            path = normalise_path(raw)
        except IllegalChars:
            continue
        assert json.dumps(path) == f'"{path}"', raw
