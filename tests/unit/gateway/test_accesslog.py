"""The access log's lines: valid JSON whatever the client sent, all of them, in order."""

from __future__ import annotations

import io
import json

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


async def test_lines_formatted_in_batches_come_out_whole_and_in_order() -> None:
    stream = io.StringIO()
    log = AccessLog(Settings(log_format="json"), None, stream)
    request = make_mocked_request("GET", "/public/v1/time")
    for n in range(1000):  # batches of 64, and a remainder formatted by the flush
        log.record(None, request, f"r{n}", 200, "", 0.001)
    await log.flush()
    ids = [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()]
    assert ids == [f"r{n}" for n in range(1000)]
    await log.flush()  # nothing new: nothing written
    assert len(stream.getvalue().splitlines()) == 1000

