"""The access log's lines: valid JSON whatever the client sent, all of them, in order."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.accesslog import AccessLog
from gateway.settings import Settings


async def test_hostile_paths_and_methods_still_make_one_json_object_a_line() -> None:
    stream = io.StringIO()
    log = AccessLog(Settings(log_format="json"), None, stream)
    hostile = '/a"b\\c\u2028d%22\n{"injected":1}'
    log.record(None, make_mocked_request("GET", "/ok"), "id-1", 200, "", 0.0012)
    log.record(None, make_mocked_request('PO"ST', "/x"), "id-2", 404, "ROUTE_NOT_FOUND", 0.0001)
    log.record(None, make_mocked_request("GET", hostile + "?secret=1"), "id-3", 400,
               "ILLEGAL_CHARS", 0.0)
    await log.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    entries = [json.loads(line) for line in lines]
    assert [e["request_id"] for e in entries] == ["id-1", "id-2", "id-3"]
    assert entries[1]["method"] == 'PO"ST' and entries[1]["error"] == "ROUTE_NOT_FOUND"
    assert entries[2]["path"] == hostile  # as sent, escaped, without the query
    assert entries[0]["duration_ms"] == 1.2 and entries[0]["ts"].endswith("Z")


async def test_a_large_flush_writes_every_line_in_order_across_writes() -> None:
    stream = io.StringIO()
    log = AccessLog(Settings(log_format="json"), None, stream)
    request = make_mocked_request("GET", "/public/v1/time")
    for n in range(1000):  # several writes of a few hundred lines
        log.record(None, request, f"r{n}", 200, "", 0.001)
    await log.flush()
    ids = [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()]
    assert ids == [f"r{n}" for n in range(1000)]
    await log.flush()  # nothing new: nothing written
    assert len(stream.getvalue().splitlines()) == 1000


async def test_a_flush_cancelled_between_writes_leaves_the_rest_for_the_next() -> None:
    stream = io.StringIO()
    log = AccessLog(Settings(log_format="json"), None, stream)
    request = make_mocked_request("GET", "/public/v1/time")
    for n in range(1000):
        log.record(None, request, f"r{n}", 200, "", 0.001)
    flushing = asyncio.create_task(log.flush())
    await asyncio.sleep(0)  # the task writes its first lines, then lets others run
    assert 0 < len(stream.getvalue().splitlines()) < 1000
    flushing.cancel()  # as at shutdown: the periodic flush is cancelled...
    with pytest.raises(asyncio.CancelledError):
        await flushing
    await log.flush()  # ...and the closing flush writes what it had not
    ids = [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()]
    assert ids == [f"r{n}" for n in range(1000)]
