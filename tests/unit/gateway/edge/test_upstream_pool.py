"""`UpstreamConnection` and `UpstreamPool` on fake transports (and, for connecting, real
loopback sockets): what each kind of answer tells the request it carries, and which
connections the pool hands out again."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from gateway.edge.upstream import UpstreamConnection, UpstreamPool, UpstreamPools
from gateway.pipeline.headers import ResponseHead
from tests.support.edgefakes import FakeTransport
from tests.support.services import free_port


class User:
    """A request as the connection sees it (`UpstreamUser`), recording every call."""

    def __init__(self, *, is_head: bool = False) -> None:
        self.is_head = is_head
        self.heads: list[tuple[int, bool, ResponseHead]] = []
        self.body = b""
        self.done: list[bool] = []
        self.lost: list[BaseException | None] = []
        self.paused: list[bool] = []

    def upstream_head(self, head: ResponseHead, eof_framed: bool) -> None:
        self.heads.append((head.status, eof_framed, head))

    def upstream_body(self, data: bytes) -> None:
        self.body += data

    def upstream_done(self, reusable: bool) -> None:
        self.done.append(reusable)

    def upstream_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def upstream_paused(self, is_paused: bool) -> None:
        self.paused.append(is_paused)


def connection(pool: UpstreamPool | None = None) -> tuple[UpstreamConnection, FakeTransport]:
    conn = UpstreamConnection(pool or UpstreamPool("http://127.0.0.1:9", 4, 1.0))
    transport = FakeTransport(("127.0.0.1", 9))
    conn.connection_made(cast(Any, transport))
    conn.pool._open.add(conn)
    return conn, transport


# --- answers -------------------------------------------------------------------------------

def test_an_answer_with_a_length_ends_at_its_length_and_is_reusable() -> None:
    conn, t = connection()
    user = User()
    conn.send(user, b"GET / HTTP/1.1\r\n\r\n")
    assert t.written == b"GET / HTTP/1.1\r\n\r\n"
    conn.data_received(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhel")
    assert user.heads[0][:2] == (201, False) and user.done == []
    conn.data_received(b"lo")
    assert user.body == b"hello" and user.done == [True]
    assert user.heads[0][2].headers == [(b"X-A", b"b")]
    assert conn.user is None


def test_a_chunked_answer_is_passed_on_unchunked() -> None:
    conn, _ = connection()
    user = User()
    conn.send(user, b"GET / HTTP/1.1\r\n\r\n")
    conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert user.body == b"abcde" and user.done == [True]
    assert user.heads[0][2].is_chunked


def test_an_answer_to_head_ends_at_its_headers_whatever_they_say() -> None:
    conn, _ = connection()
    head_user = User(is_head=True)
    conn.send(head_user, b"HEAD / HTTP/1.1\r\n\r\n")
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")
    assert head_user.done == [True] and head_user.body == b""
    assert head_user.heads[0][2].content_length == 11
    # The same connection reads the next answer from its first byte.
    user = User()
    conn.send(user, b"GET / HTTP/1.1\r\n\r\n")
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert user.body == b"ok" and user.done == [True]


def test_an_answer_framed_by_the_connection_end_is_never_reusable() -> None:
    conn, _ = connection()
    user = User()
    conn.send(user, b"GET / HTTP/1.1\r\n\r\n")
    conn.data_received(b"HTTP/1.1 200 OK\r\n\r\nall of it")
    assert user.heads[0][:2] == (200, True) and user.done == []
    conn.connection_lost(None)
    assert user.body == b"all of it" and user.done == [False] and user.lost == []


@pytest.mark.parametrize("status", [204, 304])
def test_no_content_answers_end_at_their_head(status: int) -> None:
    conn, _ = connection()
    user = User()
    conn.send(user, b"GET / HTTP/1.1\r\n\r\n")
    conn.data_received(b"HTTP/1.1 %d X\r\n\r\n" % status)
    assert user.heads[0][:2] == (status, False) and user.done == [True]


def test_interim_answers_are_dropped() -> None:
    conn, _ = connection()
    user = User()
    conn.send(user, b"POST / HTTP/1.1\r\n\r\n")
    conn.data_received(b"HTTP/1.1 100 Continue\r\n\r\n")
    conn.data_received(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
                       b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Real: 1\r\n\r\nok")
    assert [h[0] for h in user.heads] == [200]
    assert user.heads[0][2].headers == [(b"X-Real", b"1")]
    assert user.body == b"ok" and user.done == [True]


@pytest.mark.parametrize(("answer", "reusable"), [
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
])
def test_whether_the_upstream_keeps_the_connection(answer: bytes, reusable: bool) -> None:
    conn, _ = connection()
    user = User()
    conn.send(user, b"GET / HTTP/1.1\r\n\r\n")
    conn.data_received(answer)
    assert user.done == [reusable]


def test_bytes_nobody_asked_for_close_the_connection() -> None:
    conn, t = connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert t.closed


def test_a_body_longer_than_its_length_poisons_the_connection() -> None:
    """Bytes past the answer's end arrive while no request is carried: not kept."""
    conn, t = connection()
    user = User()
    conn.send(user, b"GET / HTTP/1.1\r\n\r\n")
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    assert user.done == [True]
    assert t.closed, "a connection that sent more than it said is not reused"


def test_an_unreadable_answer_loses_the_request_and_closes() -> None:
    conn, t = connection()
    user = User()
    conn.send(user, b"GET / HTTP/1.1\r\n\r\n")
    conn.data_received(b"SSH-2.0-OpenSSH\r\n")
    assert len(user.lost) == 1 and user.heads == [] and t.closed


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n",
], ids=["two-lengths", "length-and-chunked", "bare-LF"])
def test_answers_framed_two_ways_are_refused(answer: bytes) -> None:
    conn, t = connection()
    user = User()
    conn.send(user, b"GET / HTTP/1.1\r\n\r\n")
    conn.data_received(answer)
    assert len(user.lost) == 1 and user.done == [] and t.closed


def test_a_connection_lost_before_the_answer_tells_the_request() -> None:
    pool = UpstreamPool("http://127.0.0.1:9", 4, 1.0)
    conn, _ = connection(pool)
    user = User()
    conn.send(user, b"GET / HTTP/1.1\r\n\r\n")
    error = ConnectionResetError()
    conn.connection_lost(error)
    assert user.lost == [error] and conn not in pool._open


def test_the_send_buffer_filling_is_passed_on() -> None:
    conn, _ = connection()
    user = User()
    conn.send(user, b"POST / HTTP/1.1\r\n\r\n")
    conn.pause_writing()
    conn.resume_writing()
    assert user.paused == [True, False]


def test_abort_forgets_the_request() -> None:
    conn, t = connection()
    user = User()
    conn.send(user, b"GET / HTTP/1.1\r\n\r\n")
    conn.abort()
    conn.connection_lost(None)
    assert t.aborted and user.lost == [] and user.done == []


# --- the pool ------------------------------------------------------------------------------

def test_idle_connections_are_reused_newest_first_and_marked_reused() -> None:
    pool = UpstreamPool("http://127.0.0.1:9", 4, 1.0)
    old, _ = connection(pool)
    new, _ = connection(pool)
    pool.release(old)
    pool.release(new)
    assert pool.acquire(lambda _: None) is new and new.is_reused
    assert pool.acquire(lambda _: None) is old


def test_closing_connections_are_neither_pooled_nor_handed_out() -> None:
    pool = UpstreamPool("http://127.0.0.1:9", 4, 1.0)
    closing, t = connection(pool)
    t.close()
    pool.release(closing)
    assert pool.idle_count == 0
    fine, fine_t = connection(pool)
    pool.release(fine)
    fine_t.close()  # closed by the upstream while idle
    handed: list[object] = []
    pool._connect = handed.append  # type: ignore[method-assign]
    assert pool.acquire(handed.append) is None and len(handed) == 1


def test_past_the_limit_requests_wait_for_a_released_connection() -> None:
    pool = UpstreamPool("http://127.0.0.1:9", 2, 1.0)
    first, _ = connection(pool)
    connection(pool)
    handed: list[object] = []
    assert pool.acquire(handed.append) is None and handed == []
    pool.release(first)
    assert handed == [first] and first.is_reused and pool.idle_count == 0


def test_a_waiting_request_that_gives_up_is_not_handed_anything() -> None:
    pool = UpstreamPool("http://127.0.0.1:9", 1, 1.0)
    only, _ = connection(pool)
    handed: list[object] = []
    pool.acquire(handed.append)
    pool.cancel(handed.append)
    pool.cancel(handed.append)  # twice: harmless
    pool.release(only)
    assert handed == [] and pool.idle_count == 1


async def test_a_closed_connection_makes_room_for_a_waiting_request() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        pool = UpstreamPool(f"http://127.0.0.1:{port}", 1, 1.0)
        only, _ = connection(pool)
        got: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        assert pool.acquire(got.set_result) is None
        only.connection_lost(None)  # forgotten: the waiting request may connect
        conn = await asyncio.wait_for(got, 3)
        assert isinstance(conn, UpstreamConnection) and conn in pool._open
        assert conn is not only and not conn.is_reused
        pool.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_refused_connect_is_handed_as_an_error() -> None:
    pool = UpstreamPool(f"http://127.0.0.1:{free_port()}", 4, 1.0)
    got: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    assert pool.acquire(got.set_result) is None
    error = await asyncio.wait_for(got, 3)
    assert isinstance(error, OSError)
    assert pool._connecting == 0 and not pool._open


async def test_closing_the_pool_fails_waiting_requests_and_closes_connections() -> None:
    pool = UpstreamPool("http://127.0.0.1:9", 1, 1.0)
    _only, t = connection(pool)
    handed: list[object] = []
    pool.acquire(handed.append)
    pool.close()
    assert t.closed
    assert len(handed) == 1 and isinstance(handed[0], ConnectionError)


def test_origins_give_host_headers_and_one_pool_each() -> None:
    assert UpstreamPool("http://127.0.0.1:9000", 1, 1.0).host_header == b"127.0.0.1:9000"
    tls = UpstreamPool("https://api.exchange.example", 1, 1.0)
    assert (tls.is_tls, tls.port, tls.host_header) == (True, 443, b"api.exchange.example")
    pools = UpstreamPools(4, 1.0)
    assert pools.get("http://a:1") is pools.get("http://a:1")
    assert pools.get("http://a:1") is not pools.get("http://a:2")
