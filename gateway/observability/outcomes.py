"""What each answered request came to, handed in batches to the metrics and the access log.

Per request the handler only appends the objects it already holds (`Outcomes.add`). Every
`batch` requests, every `interval` seconds and at shutdown, the facts are read off them in one
tight loop and given to each reader (`Metrics.count`, `AccessLog.write`): per request, that costs
a fraction of tallying and logging it on its own between two requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from gateway.tasks import every, stop_task

if TYPE_CHECKING:
    from gateway.http.request import RequestView
    from gateway.pipeline.context import RequestContext

__all__ = ["Outcome", "Outcomes", "Reader"]

log = logging.getLogger(__name__)



class Outcome(NamedTuple):
    """One answered request, as metrics and the access log read it."""

    at_ms: int  # unix milliseconds
    request_id: str
    client_ip: str
    method: str
    path: str
    route: str | None  # the matched pattern
    status: int
    code: str  # the gateway's error code, '' for none
    key_id: str | None
    account_id: int | None
    micros: int  # the whole request
    upstream_micros: int | None  # of which on the upstream, when it was asked


Reader = Callable[[list[Outcome]], None]

# ctx (None when refused before one was made), request, request id, status, code, started,
# ended (both `time.perf_counter_ns()`: integers, no rounding)
_Pending = tuple["RequestContext | None", "RequestView", str, int, str, int, int]


class Outcomes:
    """Answered requests waiting for their batch."""

    def __init__(self, readers: Sequence[Reader] = (), *, batch: int = 64,
                 interval: float = 0.5) -> None:
        self.readers = list(readers)
        self._batch = batch
        self._interval = interval
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, ctx: RequestContext | None, request: RequestView, request_id: str,
            status: int, code: str, started: int) -> None:
        """One answered request (the hot path: an append). `started`: `perf_counter_ns()`."""
        pending = self._pending
        pending.append((ctx, request, request_id, status, code, started,
                        time.perf_counter_ns()))
        if len(pending) >= self._batch:
            self.drain()

    def drain(self) -> None:
        """Give every request added since the last drain to the readers, in order."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        wall = time.time_ns() - time.perf_counter_ns()  # perf_counter readings as unix time
        outcomes: list[Outcome] = []
        for ctx, request, request_id, status, code, started, ended in pending:
            at_ms, micros = (wall + ended) // 1_000_000, (ended - started) // 1000
            if ctx is not None:
                route = ctx.route
                key = ctx.key
                if key is not None:
                    key_id: str | None = key.key_id
                    account: int | None = key.account_id
                else:  # the id the client claimed, if any: public, and useful to ops
                    key_id = ctx.token.key_id if ctx.token is not None else None
                    account = None
                upstream = ctx.upstream_ns
                outcomes.append(Outcome(
                    at_ms, request_id, ctx.client_ip_text, request.method, ctx.path,
                    route.pattern if route is not None else None, status, code, key_id,
                    account, micros, upstream // 1000 if upstream is not None else None))
            else:  # refused before its path could be read: as it came, without the query
                outcomes.append(Outcome(
                    at_ms, request_id, request.peer or "-", request.method, request.path, None,
                    status, code, None, None, micros, None))
        for reader in self.readers:
            try:
                reader(outcomes)
            except Exception:  # one broken reader must neither stop the others nor a request
                log.exception("%r failed on a batch of %d requests", reader, len(outcomes))

    def start(self) -> None:
        self._task = every(self._interval, self.drain, "outcomes")

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None
        self.drain()
