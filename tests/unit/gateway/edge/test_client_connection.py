"""`ClientConnection` and `Exchange`, driven by hand on fake transports: pipelining order and
bound, why reading pauses, deadlines at a chosen `now`, refusals, and what each kind of
upstream answer (or failure) becomes for the client."""

from __future__ import annotations

from gateway.edge.client import ClientConnection
from tests.support.edgefakes import EdgeHarness, FakeTransport, error_code, split_answers


def get(path: bytes = b"/public/v1/time", request_id: bytes = b"") -> bytes:
    extra = b"X-Request-Id: " + request_id + b"\r\n" if request_id else b""
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def request_ids(upstream: FakeTransport) -> list[bytes]:
    return [line.split(b": ", 1)[1] for line in bytes(upstream.written).split(b"\r\n")
            if line.startswith(b"X-Request-Id: ")]


# --- pipelining ----------------------------------------------------------------------------

async def test_pipelined_requests_go_upstream_one_at_a_time_and_answer_in_order() -> None:
    h = EdgeHarness()
    up, up_t = h.upstream()
    conn, t = h.client()
    conn.data_received(get(request_id=b"a") + get(b"/public/v1/fees", b"b"))
    assert request_ids(up_t) == [b"a"], "the second must wait for the first's answer"
    assert len(conn.queue) == 1
    up.data_received(ok(b"first"))
    assert request_ids(up_t) == [b"a", b"b"], "the pooled connection carries the next"
    up.data_received(ok(b"second"))
    answers = split_answers(t.take())
    assert [(s, hd["x-request-id"], b) for s, hd, b in answers] == [
        (200, "a", b"first"), (200, "b", b"second")]
    assert not t.closed and conn.current is None and not conn.queue


async def test_reading_stops_past_max_pipelined_and_resumes_as_the_queue_shrinks() -> None:
    h = EdgeHarness(max_pipelined=2)
    up, _ = h.upstream()
    conn, t = h.client()
    conn.data_received(get(request_id=b"a") + get(request_id=b"b"))
    assert t.reading and len(conn.queue) == 1
    conn.data_received(get(request_id=b"c"))
    assert not t.reading and conn.paused & ClientConnection.QUEUED
    up.data_received(ok())  # a answered: b starts, one waits
    assert t.reading and t.resumes == 1 and not conn.paused
    up.data_received(ok())
    up.data_received(ok())
    assert [hd["x-request-id"] for _, hd, _ in split_answers(t.take())] == ["a", "b", "c"]


async def test_pause_reasons_are_counted_apart() -> None:
    h = EdgeHarness()
    conn, t = h.client()
    conn.pause(ClientConnection.UPSTREAM_FULL)
    conn.pause(ClientConnection.WAITING)
    assert (t.pauses, t.reading) == (1, False)
    conn.resume(ClientConnection.UPSTREAM_FULL)
    assert not t.reading, "still waiting for the other reason"
    conn.resume(ClientConnection.QUEUED)  # a reason never given: nothing happens
    assert t.resumes == 0
    conn.resume(ClientConnection.WAITING)
    assert (t.resumes, t.reading) == (1, True)


async def test_an_upstream_whose_buffer_fills_holds_the_client_and_the_reverse() -> None:
    h = EdgeHarness()
    up, up_t = h.upstream()
    conn, t = h.client()
    conn.data_received(b"POST /public/v1/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 10"
                       b"\r\n\r\n12345")
    up.pause_writing()
    assert not t.reading and conn.paused == ClientConnection.UPSTREAM_FULL
    up.resume_writing()
    assert t.reading
    conn.pause_writing()  # the client reads slowly: stop reading the upstream's answer
    assert not up_t.reading
    conn.resume_writing()
    assert up_t.reading


# --- deadlines -----------------------------------------------------------------------------

async def test_a_head_that_does_not_come_gets_408_at_the_header_deadline() -> None:
    h = EdgeHarness(client_header_timeout=5.0)
    conn, t = h.client()
    started = h.loop.time()
    conn.data_received(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\n")
    conn.check_deadline(started + 4.9)
    assert t.written == b"" and not t.closed
    conn.check_deadline(started + 5.1)
    [(status, headers, body)] = split_answers(t.take())
    assert (status, error_code(body), headers.get("connection")) == (
        408, "REQUEST_TIMEOUT", "close")
    assert t.closed and h.edge.timed_out == 1


async def test_a_connection_that_sends_nothing_is_closed_silently_at_the_header_deadline(
        ) -> None:
    h = EdgeHarness(client_header_timeout=5.0)
    conn, t = h.client()
    conn.check_deadline(h.loop.time() + 5.1)
    assert t.closed and t.written == b""


async def test_a_body_that_does_not_come_gets_408_and_the_upstream_is_cut() -> None:
    h = EdgeHarness(client_body_timeout=3.0)
    _up, up_t = h.upstream()
    conn, t = h.client()
    started = h.loop.time()
    conn.data_received(b"POST /public/v1/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 10"
                       b"\r\n\r\n123")
    assert up_t.written.endswith(b"\r\n\r\n123"), "the body streams upstream as it comes"
    conn.check_deadline(started + 2.9)
    assert t.written == b""
    conn.check_deadline(started + 3.1)
    [(status, headers, body)] = split_answers(t.take())
    assert (status, error_code(body), headers.get("connection")) == (
        408, "REQUEST_TIMEOUT", "close")
    assert up_t.aborted, "the upstream connection holding half a request must go"
    assert h.pool.idle_count == 0
    assert t.closed


async def test_an_idle_keep_alive_connection_closes_at_the_client_timeout() -> None:
    h = EdgeHarness(client_timeout=7.0)
    up, _ = h.upstream()
    conn, t = h.client()
    conn.data_received(get())
    up.data_received(ok())
    answered = h.loop.time()
    t.take()
    conn.check_deadline(answered + 6.9)
    assert not t.closed
    conn.check_deadline(answered + 7.1)
    assert t.closed and t.written == b""


async def test_an_upstream_that_does_not_answer_gets_504() -> None:
    h = EdgeHarness(upstream_timeout=4.0)
    _, up_t = h.upstream()
    conn, t = h.client()
    started = h.loop.time()
    conn.data_received(get())
    conn.check_deadline(started + 3.9)
    assert t.written == b""
    conn.check_deadline(started + 4.1)
    [(status, _, body)] = split_answers(t.take())
    assert (status, error_code(body)) == (504, "GATEWAY_TIMEOUT")
    assert up_t.aborted
    assert not t.closed, "a whole request was read: the connection may go on"


async def test_an_answer_that_outlasts_the_total_deadline_is_cut() -> None:
    h = EdgeHarness(upstream_total_timeout=10.0)
    up, up_t = h.upstream()
    conn, t = h.client()
    conn.data_received(get())
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
    started = h.loop.time()
    assert t.written.startswith(b"HTTP/1.1 200 OK")
    conn.check_deadline(started + 10.1)
    assert t.aborted and up_t.aborted


# --- refusals ------------------------------------------------------------------------------

async def test_unreadable_bytes_get_400_and_the_connection_closes() -> None:
    h = EdgeHarness()
    conn, t = h.client()
    conn.data_received(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)))
    [(status, headers, body)] = split_answers(t.take())
    assert (status, error_code(body), headers["connection"]) == (400, "ILLEGAL_CHARS", "close")
    assert t.eof_written  # half-closed: what the client still sends is read and dropped
    conn.data_received(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\n\r\n")
    assert t.take() == b""
    h.services.outcomes.drain()
    assert [(o.method, o.status, o.request_id) for o in h.services.seen] == [
        ("UNKNOWN", 400, headers["x-request-id"])]


async def test_bytes_after_a_read_request_that_cannot_be_read_close_after_its_answer() -> None:
    """The request read whole is answered; then the unreadable bytes get their 400, and the
    connection closes."""
    h = EdgeHarness()
    up, up_t = h.upstream()
    conn, t = h.client()
    conn.data_received(get(request_id=b"good") + b"GET / HTTP/1.1\r\nBad Name: 1\r\n\r\n")
    assert request_ids(up_t) == [b"good"]
    assert not t.closed  # not before the good request's answer
    up.data_received(ok())
    answers = split_answers(t.take())
    assert [status for status, _, _ in answers] == [200, 400]
    assert answers[1][1]["connection"] == "close"
    assert t.closed


async def test_a_get_with_a_body_is_refused_before_the_upstream() -> None:
    h = EdgeHarness()
    _, up_t = h.upstream()
    conn, t = h.client()
    conn.data_received(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\nContent-Length: 2"
                       b"\r\n\r\nhi")
    [(status, _, body)] = split_answers(t.take())
    assert (status, error_code(body)) == (400, "ILLEGAL_CHARS")
    assert up_t.written == b"" and t.closed


async def test_headers_past_the_count_limit_get_431() -> None:
    h = EdgeHarness(max_header_count=5)
    conn, t = h.client()
    conn.data_received(b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\n"
                       + b"".join(b"X-%d: 1\r\n" % i for i in range(5)) + b"\r\n")
    [(status, _, body)] = split_answers(t.take())
    assert (status, error_code(body)) == (431, "HEADERS_TOO_LARGE")


# --- what the upstream's answer becomes ----------------------------------------------------

async def test_head_answers_have_no_body_and_the_connection_is_pooled() -> None:
    h = EdgeHarness()
    up, _up_t = h.upstream()
    conn, t = h.client()
    conn.data_received(b"HEAD /public/v1/time HTTP/1.1\r\nHost: x\r\n\r\n")
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")
    head = t.take()
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 11\r\n" in head
    assert head.endswith(b"\r\n\r\n"), "no body after the answer to HEAD"
    assert h.pool.idle_count == 1
    conn.data_received(get(request_id=b"next"))
    up.data_received(ok(b"hello"))
    assert split_answers(t.take())[0][2] == b"hello"


async def test_an_answer_framed_by_the_end_of_the_connection_is_never_pooled() -> None:
    h = EdgeHarness()
    up, _up_t = h.upstream()
    conn, t = h.client()
    conn.data_received(get())
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello ")
    up.data_received(b"world")
    up.connection_lost(None)  # the end of the answer
    data = t.take()
    assert b"Transfer-Encoding: chunked\r\n" in data
    assert data.endswith(b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n")
    assert h.pool.idle_count == 0
    assert not t.closed, "the client's connection is whole: chunked framing ended it"


async def test_an_eof_framed_answer_to_an_http10_client_closes_the_client() -> None:
    h = EdgeHarness()
    up, _ = h.upstream()
    conn, t = h.client()
    conn.data_received(b"GET /public/v1/time HTTP/1.0\r\n\r\n")
    up.data_received(b"HTTP/1.1 200 OK\r\n\r\nhello")
    up.connection_lost(None)
    data = t.take()
    assert b"Transfer-Encoding" not in data and data.endswith(b"\r\n\r\nhello")
    assert t.closed


async def test_interim_answers_are_not_passed_on() -> None:
    h = EdgeHarness()
    up, _ = h.upstream()
    conn, t = h.client()
    conn.data_received(get())
    up.data_received(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>"
                     b"\r\n\r\n" + ok(b"done"))
    data = t.take()
    assert data.count(b"HTTP/1.1 ") == 1 and b"Link" not in data
    assert split_answers(data)[0][2] == b"done"
    assert h.pool.idle_count == 1


async def test_an_upstream_connection_close_is_not_pooled_and_not_passed_on() -> None:
    h = EdgeHarness()
    up, up_t = h.upstream()
    conn, t = h.client()
    conn.data_received(get())
    up.data_received(ok(extra=b"Connection: close\r\n"))
    [(status, headers, _)] = split_answers(t.take())
    assert status == 200 and "connection" not in headers
    assert up_t.closed and h.pool.idle_count == 0
    assert not t.closed


async def test_expect_100_continue_is_answered_once_when_forwarded() -> None:
    h = EdgeHarness()
    up, up_t = h.upstream()
    conn, t = h.client()
    conn.data_received(b"POST /public/v1/orders HTTP/1.1\r\nHost: x\r\nExpect: 100-continue"
                       b"\r\nContent-Length: 2\r\n\r\n")
    assert t.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert b"Expect" not in up_t.written
    conn.data_received(b"hi")
    up.data_received(ok())
    data = t.take()
    assert b"100 Continue" not in data and data.startswith(b"HTTP/1.1 200")


# --- upstream failures ---------------------------------------------------------------------

async def test_an_upstream_lost_before_its_answer_is_502() -> None:
    h = EdgeHarness()
    up, _ = h.upstream(idle=False)  # fresh: not a stale pooled one
    conn, t = h.client()
    conn.data_received(get())
    up.connection_lost(ConnectionResetError())
    [(status, _, body)] = split_answers(t.take())
    assert (status, error_code(body)) == (502, "SERVICE_UNAVAILABLE")
    assert not t.closed


async def test_an_upstream_lost_mid_answer_cuts_the_client() -> None:
    h = EdgeHarness()
    up, _ = h.upstream()
    conn, t = h.client()
    conn.data_received(get())
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    up.connection_lost(ConnectionResetError())
    assert t.aborted, "a short answer must never look whole"
    assert b"502" not in t.written


async def test_a_stale_pooled_connection_is_retried_once_for_a_get() -> None:
    h = EdgeHarness()
    spare, spare_t = h.upstream()
    stale, stale_t = h.upstream()  # newest: taken first
    conn, t = h.client()
    conn.data_received(get(request_id=b"r"))
    assert request_ids(stale_t) == [b"r"] and spare_t.written == b""
    stale.connection_lost(ConnectionResetError())  # the upstream had closed it
    assert request_ids(spare_t) == [b"r"], "sent again on another connection"
    spare.data_received(ok(b"fine"))
    assert split_answers(t.take())[0][:1] == (200,)


async def test_a_get_is_retried_only_once() -> None:
    h = EdgeHarness()
    first, _ = h.upstream()
    second, _ = h.upstream()
    third, third_t = h.upstream()
    conn, t = h.client()
    conn.data_received(get())
    third.connection_lost(ConnectionResetError())
    second.connection_lost(ConnectionResetError())
    [(status, _, _)] = split_answers(t.take())
    assert status == 502
    assert first.transport is not None and not first.transport.is_closing()
    assert third_t.aborted is False


async def test_requests_with_a_body_or_unsafe_methods_are_never_retried() -> None:
    h = EdgeHarness()
    _, spare_t = h.upstream()
    stale, _ = h.upstream()
    conn, t = h.client()
    conn.data_received(b"DELETE /public/v1/orders HTTP/1.1\r\nHost: x\r\n\r\n")
    stale.connection_lost(ConnectionResetError())
    [(status, _, _)] = split_answers(t.take())
    assert status == 502 and spare_t.written == b""


async def test_a_client_that_leaves_cuts_its_upstream_leg() -> None:
    h = EdgeHarness()
    _, up_t = h.upstream()
    conn, _t = h.client()
    conn.data_received(get() + get())
    conn.connection_lost(None)
    assert up_t.aborted
    assert not conn.queue and conn.current is None
    assert h.edge.connections == set()


async def test_a_half_close_is_answered_then_closed() -> None:
    h = EdgeHarness()
    up, _ = h.upstream()
    conn, t = h.client()
    conn.data_received(get())
    assert conn.eof_received() is True, "keep the connection half-open for the answer"
    up.data_received(ok())
    assert split_answers(t.take())[0][0] == 200
    assert t.closed
    idle, _idle_t = h.client(("198.51.100.8", 1))
    assert idle.eof_received() is False  # nothing asked: close at once


# --- the edge's bugs the hostile corpus found, at the unit level ---------------------------

async def test_a_chunked_body_turning_unreadable_cuts_the_upstream_leg() -> None:
    """The head and first chunk went upstream; the next chunk size is junk: the client gets
    400, and the upstream connection holding half a request is cut, not left open (nor ever
    pooled)."""
    h = EdgeHarness()
    _, up_t = h.upstream()
    conn, t = h.client()
    conn.data_received(b"POST /public/v1/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                       b"chunked\r\n\r\n5\r\nhello\r\n")
    assert up_t.written.endswith(b"5\r\nhello\r\n")
    conn.data_received(b"zz\r\n")
    [(status, _, body)] = split_answers(t.take())
    assert (status, error_code(body)) == (400, "ILLEGAL_CHARS")
    assert up_t.closed, "the upstream connection still holds a half-sent request"


async def test_an_upgrade_request_with_a_body_is_not_read_as_two_requests() -> None:
    """llhttp ends a request asking to upgrade at its head and returns its body as what
    follows (aiohttp GHSA-mfx4-hv73-q22v): here the body is a request of its own."""
    h = EdgeHarness()
    _, up_t = h.upstream()
    conn, _t = h.client()
    hidden = b"GET /public/v1/fees HTTP/1.1\r\nHost: hidden\r\n\r\n"
    conn.data_received(b"POST /public/v1/orders HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                       b"Upgrade: websocket\r\nContent-Length: %d\r\n\r\n%s" % (
                           len(hidden), hidden))
    assert not conn.queue, "the body was read as a second request"
    forwarded = bytes(up_t.written)
    assert forwarded == b"" or forwarded.endswith(hidden), forwarded


async def test_http10_with_transfer_encoding_does_not_keep_the_connection() -> None:
    """RFC 9112 6.1: faulty framing; close after the answer even when asked to keep alive."""
    h = EdgeHarness()
    up, _ = h.upstream()
    conn, t = h.client()
    conn.data_received(b"POST /public/v1/orders HTTP/1.0\r\nConnection: keep-alive\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
    up.data_received(ok())
    [(_, headers, _)] = split_answers(t.take())
    assert headers.get("connection") == "close" and t.closed


async def test_good_pipelined_requests_before_a_bad_one_are_still_answered() -> None:
    h = EdgeHarness()
    up, up_t = h.upstream()
    conn, t = h.client()
    conn.data_received(get(request_id=b"one") + get(request_id=b"two")
                       + b"GET / HTTP/1.1\r\nBad Name: 1\r\n\r\n")
    up.data_received(ok())
    up.data_received(ok())
    answers = split_answers(t.take())
    assert [hd["x-request-id"] for _, hd, _ in answers[:2]] == ["one", "two"], answers
    assert request_ids(up_t) == [b"one", b"two"]
    assert t.closed


async def test_a_closing_connection_lingers_then_closes() -> None:
    """After its last answer the gateway half-closes, drops what still comes (its unread
    bytes would otherwise reset the connection and lose the answers), and closes when the
    client does, or when the linger time is up."""
    h = EdgeHarness()
    conn, t = h.client()
    conn.data_received(b"\x16\x03\x01 not http")
    assert t.eof_written and not t.fully_closed and not t.aborted
    conn.data_received(b"more bytes the client had in flight")
    assert t.take().count(b"HTTP/1.1 ") == 1  # the one refusal, nothing for the rest
    assert conn.eof_received() is False  # the client closes: so does the gateway
    conn2, t2 = h.client()
    conn2.data_received(b"\x16\x03\x01 not http")
    conn2.check_deadline(h.edge.loop.time() + 0.5)
    assert not t2.fully_closed  # still lingering
    conn2.check_deadline(h.edge.loop.time() + h.edge.settings.client_linger_timeout + 1)
    assert t2.fully_closed
