"""`response_headers`: what of the upstream's answer reaches the client."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.pipeline.forward import response_headers


def _answer(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_hop_by_hop_and_connection_named_headers_are_dropped_the_rest_kept_in_order() -> None:
    got = response_headers(_answer(
        ("Server", "nginx"), ("Connection", "keep-alive, X-Hop"), ("Set-Cookie", "a=1"),
        ("x-hop", "internal"), ("Keep-Alive", "timeout=5"), ("Set-Cookie", "b=2"),
        ("Transfer-Encoding", "chunked"), ("Retry-After", "7")))
    assert list(got.items()) == [("Server", "nginx"), ("Set-Cookie", "a=1"),
                                 ("Set-Cookie", "b=2"), ("Retry-After", "7")]


def test_an_answer_without_hop_by_hop_headers_is_copied_whole() -> None:
    answer = _answer(("Content-Type", "application/json"), ("X-Rate", "1"), ("x-rate", "2"))
    got = response_headers(answer)
    assert list(got.items()) == list(answer.items())
    got["X-Extra"] = "ours"  # a copy: the upstream's headers are not touched
    assert "X-Extra" not in answer
