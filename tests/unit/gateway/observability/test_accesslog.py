"""The access log's lines: valid JSON whatever the client sent, all of them, in order."""

from __future__ import annotations

import io
import json
import time

from gateway.config.settings import Settings
from gateway.http.request import RequestView
from gateway.observability.accesslog import AccessLog
from gateway.observability.outcomes import Outcomes


def make_request(method: str, target: str) -> RequestView:
    return RequestView(method, target.encode(), "192.0.2.1", "http")


async def test_hostile_paths_and_methods_still_make_one_json_object_a_line() -> None:
    stream = io.StringIO()
    log = AccessLog(Settings(log_format="json"), None, stream)
    outcomes = Outcomes([log.write])
    hostile = '/a"b\\c\u2028d%22\n{"injected":1}'
    started = time.perf_counter_ns()
    outcomes.add(None, make_request("GET", "/ok"), "id-1", 200, "", started - 1_200_000)
    outcomes.add(None, make_request('PO"ST', "/x"), "id-2", 404, "ROUTE_NOT_FOUND",
                 started)
    outcomes.add(None, make_request("GET", hostile + "?secret=1"), "id-3", 400,
                 "ILLEGAL_CHARS", started)
    await outcomes.aclose()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    entries = [json.loads(line) for line in lines]
    assert [e["request_id"] for e in entries] == ["id-1", "id-2", "id-3"]
    assert entries[1]["method"] == 'PO"ST' and entries[1]["error"] == "ROUTE_NOT_FOUND"
    assert entries[2]["path"] == hostile  # as sent, escaped, without the query
    assert 1.2 <= entries[0]["duration_ms"] < 1000 and entries[0]["ts"].endswith("Z")
    assert entries[0]["upstream_ms"] is None and entries[0]["key_id"] is None


async def test_lines_written_in_batches_come_out_whole_and_in_order() -> None:
    stream = io.StringIO()
    log = AccessLog(Settings(log_format="json"), None, stream)
    outcomes = Outcomes([log.write], batch=64)
    request = make_request("GET", "/public/v1/time")
    for n in range(1000):
        outcomes.add(None, request, f"r{n}", 200, "", time.perf_counter_ns())
    # Written a batch at a time, as soon as a batch is full; the remainder waits for a drain.
    assert len(stream.getvalue().splitlines()) == 1000 // 64 * 64
    outcomes.drain()
    ids = [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()]
    assert ids == [f"r{n}" for n in range(1000)]
    outcomes.drain()  # nothing new: nothing written
    assert len(stream.getvalue().splitlines()) == 1000


async def test_a_failing_reader_neither_stops_the_others_nor_the_request() -> None:
    seen: list[str] = []

    def broken(_batch: object) -> None:
        raise RuntimeError("boom")

    outcomes = Outcomes([broken, lambda batch: seen.extend(o.request_id for o in batch)], batch=2)
    request = make_request("GET", "/x")
    for n in range(3):
        outcomes.add(None, request, f"r{n}", 200, "", time.perf_counter_ns())
    outcomes.drain()
    assert seen == ["r0", "r1", "r2"]
