"""Needs: PostgreSQL and Redis (tests/conftest.py). A bounded property-based fuzz of the edge.

Valid requests, mutated byte by byte (CR and LF inserted or dropped, headers duplicated or
re-cased, framing values changed, requests pipelined) and sent in random pieces, against the
real gateway in front of an upstream that records every byte. Whatever is sent:

* the gateway never answers 5xx, every answer is valid HTTP/1.1, and each of its own errors
  is the contract's JSON;
* it keeps serving (`/healthz` answers after every example);
* the upstream receives whole requests that are exactly the ones the gateway answered 2xx
  for, and nothing else: at most the start of a refused request, on a connection the gateway
  then closed;
* each forwarded path, read as the upstream reads it (unreserved escapes decoded), names the
  route the gateway matched.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import socket
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.config.routes import RouteTable
from gateway.config.settings import Settings
from gateway.observability.outcomes import Outcome
from tests.support.edgestack import edge_settings
from tests.support.rawclient import converse, error_of, read_answers
from tests.support.recording import RecordingUpstream, parse_requests
from tests.support.servers import IssuedKey, RunningGateway, issue_key, start_gateway

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

DEADLINE = 0.2  # header and body deadlines: a truncated request costs this long

SEEDS = [
    b"GET /public/v1/time HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n",
    b"GET /public/v1/order-book/BTC_EUR?depth=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /public/v1/account/balances HTTP/1.1\r\nHost: x\r\n{A}Accept: */*\r\n\r\n",
    b"GET /public/v1/time HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /public/v1/account/orders HTTP/1.1\r\nHost: x\r\n{A}Content-Type: application/json"
    b"\r\nContent-Length: 13\r\n\r\n{\"amount\":1}\n",
    b"POST /public/v1/account/orders HTTP/1.1\r\nHost: x\r\n{A}Transfer-Encoding: chunked\r\n"
    b"\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
    b"DELETE /public/v1/account/orders/%63ancel-all-after HTTP/1.1\r\nHost: x\r\n{A}\r\n",
    b"POST /public/v1/account/orders HTTP/1.1\r\nHost: x\r\n{A}Expect: 100-continue\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    b"POST /public/v1/account/orders HTTP/1.1\r\nHost: x\r\n{A}Connection: Upgrade\r\n"
    b"Upgrade: websocket\r\nContent-Length: 2\r\n\r\n{}",
]
# Bytes that matter to an HTTP reader, and a few that should not.
INTERESTING = b"\r\n\t :;,%/\\.?#\x00\x7f\xff\x0b\x0c\"'=-_0123456789aAzZ"
NAMES = [b"Content-Length", b"Transfer-Encoding", b"Host", b"Connection", b"Expect",
         b"Upgrade", b"X-Gateway-Key-Id", b"X_Forwarded_For", b"Authorization"]
VALUES = [b"chunked", b"0", b"5", b"-1", b"+5", b"0x5", b"99999999999999999999", b"close",
          b"keep-alive", b"Upgrade", b"websocket", b"100-continue", b"chunked, identity",
          b"identity", b" chunked", b"\tchunked"]


@st.composite
def hostile(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A few seed requests, pipelined and mutated, and where to split them."""
    data = bytearray(b"".join(draw(st.lists(st.sampled_from(SEEDS), min_size=1, max_size=3))))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 8))
        at = draw(st.integers(0, len(data)))
        if op == 0 and data:  # replace a byte
            data[min(at, len(data) - 1)] = draw(st.sampled_from(INTERESTING))
        elif op == 1:  # insert bytes
            data[at:at] = draw(st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"\x00", b":",
                                                b"\r\n\r\n", b"%2F", b"/../"]))
        elif op == 2 and data:  # delete a run
            del data[at:at + draw(st.integers(1, 4))]
        elif op == 3:  # drop a CR or a LF
            found = data.find(draw(st.sampled_from([b"\r", b"\n"])), at)
            if found >= 0:
                del data[found]
        elif op in (4, 5):  # duplicate a header line, or re-case its name
            start = data.find(b"\r\n", at)
            end = data.find(b"\r\n", start + 2) if start >= 0 else -1
            if end > start >= 0:
                line = bytes(data[start + 2:end])
                if op == 4:
                    data[end:end] = b"\r\n" + line
                else:
                    name, colon, value = line.partition(b":")
                    data[start + 2:end] = name.swapcase() + colon + value
        elif op == 6:  # a framing or routing header, added where a line starts
            start = data.find(b"\r\n", at)
            if start >= 0:
                data[start + 2:start + 2] = (draw(st.sampled_from(NAMES)) + b": "
                                             + draw(st.sampled_from(VALUES)) + b"\r\n")
        elif op == 7:  # a number changed (lengths, chunk sizes)
            for digit in b"0123456789":
                found = data.find(bytes([digit]), at)
                if found >= 0:
                    data[found:found + 1] = str(draw(st.integers(0, 40))).encode()
                    break
        elif op == 8 and data:  # a byte flipped anywhere
            index = min(at, len(data) - 1)
            data[index] ^= 1 << draw(st.integers(0, 7))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=6))))
    return bytes(data), cuts


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstream() -> AsyncIterator[RecordingUpstream]:
    server = RecordingUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def fuzz_settings(database_url: str, redis_url: str, upstream: RecordingUpstream,
                  tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return edge_settings(database_url, redis_url, upstream.url,
                         tmp_path_factory.mktemp("fuzz"), client_header_timeout=DEADLINE,
                         client_body_timeout=DEADLINE, client_timeout=5.0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(fuzz_settings: Settings) -> AsyncIterator[RunningGateway]:
    running = await start_gateway(fuzz_settings)
    yield running
    await running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def key(gateway: RunningGateway, fuzz_settings: Settings,
              database_url: str) -> AsyncIterator[IssuedKey]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    issued = await issue_key(pool, fuzz_settings, ["read", "trade"])
    await pool.close()
    yield issued


@pytest.fixture(scope="module")
def outcomes(gateway: RunningGateway) -> Iterator[list[Outcome]]:
    seen: list[Outcome] = []
    gateway.services.outcomes.readers.append(seen.extend)
    yield seen
    gateway.services.outcomes.readers.remove(seen.extend)


_UNRESERVED = re.compile(
    r"%(4[1-9A-Fa-f]|5[0-9Aa]|6[1-9A-Fa-f]|7[0-9Aa]|3[0-9]|2[dDeE]|5[fF]|7[eE])")


def as_upstream_reads(path: str) -> str:
    """A path with its unreserved escapes decoded: the same resource to any server."""
    return _UNRESERVED.sub(lambda m: chr(int(m.group(1), 16)), path)


async def send_in_pieces(port: int, data: bytes, cuts: list[int]) -> bytes:
    """Send `data` split at `cuts` (a zero delay between pieces), half-close, and read what
    comes back until the gateway closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""

    async def read_all() -> bytes:
        out = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                out += chunk
        return out

    reading = asyncio.ensure_future(read_all())
    try:
        edges = [0, *cuts, len(data)]
        for start, end in itertools.pairwise(edges):
            if reading.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(data[start:end])
                await writer.drain()
            await asyncio.sleep(0)
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").shutdown(socket.SHUT_WR)
        try:
            received = await asyncio.wait_for(reading, DEADLINE * 4 + 3)
        except TimeoutError:
            raise AssertionError(f"the gateway neither finished nor closed: {data!r}") from None
    finally:
        reading.cancel()
        writer.close()
    return received


async def check_upstream(upstream: RecordingUpstream, answered: set[str], table: RouteTable,
                         matched: dict[str, str | None]) -> None:
    """Whole requests upstream == the 2xx answers, by request id; a leftover is only the start
    of a refused request, on a connection that gets closed; each path names the route the
    gateway matched for it."""
    seen: list[str] = []
    for conn in upstream.carrying():
        data = upstream.since_mark(conn)
        read = parse_requests(data)
        assert read.error is None and conn.error is None, (read.error, conn.error, data)
        for request in read.requests:
            request_id = request.values(b"x-request-id")[0].decode()
            seen.append(request_id)
            route = table.match(request.method, as_upstream_reads(request.path.decode()))
            assert route is not None and route.pattern == matched.get(request_id), (
                "the upstream reads another route than the one matched", request, matched)
        if read.leftover:
            closed = await upstream.wait_for(lambda c=conn: not c.is_open, 1.0)  # type: ignore[misc]
            assert closed, f"a half-sent request is held open upstream: {read.leftover!r}"
    assert sorted(seen) == sorted(answered), (seen, answered)


@settings(max_examples=200, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=hostile())
async def test_mutated_requests_never_break_the_edge(
        gateway: RunningGateway, upstream: RecordingUpstream, key: IssuedKey,
        outcomes: list[Outcome], case: tuple[bytes, list[int]]) -> None:
    template, cuts = case
    token = b"Authorization: Bearer " + key.token.encode() + b"\r\n"
    data = template.replace(b"{A}", token)
    cuts = [c + (len(token) - 3) * template[:c].count(b"{A}") for c in cuts]
    assume(b"HEAD" not in data)  # answers to HEAD cannot be read from the bytes alone
    upstream.mark()
    raw = await send_in_pieces(gateway.port, data, cuts)
    reply = read_answers(raw)
    assert reply.error is None, (reply.error, raw)
    ok: set[str] = set()
    for answer in reply.answers:
        assert answer.status < 500, (answer, data)
        request_id = answer.header("X-Request-Id")
        assert request_id, answer
        if answer.status == 200:
            ok.add(request_id)
        elif answer.body:
            error_of(answer)
    gateway.services.outcomes.drain()
    matched = {o.request_id: o.route for o in outcomes}
    outcomes.clear()
    await check_upstream(upstream, ok, gateway.services.table, matched)
    health = await converse(gateway.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                            grace=0)
    assert health.statuses == [200], ("the gateway stopped answering", data)
