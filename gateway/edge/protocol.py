"""aiohttp's HTTP protocol, answering what it refuses on its own with the contract's errors.

aiohttp's parser refuses some requests before any handler sees them: smuggling attempts
(Content-Length beside chunked, two lengths), bytes that are not HTTP (TLS on the plain
port, a space in a header name), a header line past its own limit. Its answer would be plain
text without a request id, and it logs each one with a traceback: a flood of garbage would
become a flood of tracebacks. Here such a request gets the contract's JSON and one log line,
both naming the same request id, and the connection is closed (what follows the refused
bytes cannot be trusted to be a request of its own). Like every answer, it is counted and
gets an access-log line (method `UNKNOWN`, path `/`: aiohttp keeps neither).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from gateway.edge.app import request_id_of
from gateway.http.errors import (
    GatewayError,
    HeadersTooLarge,
    InternalError,
    MalformedRequest,
    error_response,
)
from gateway.observability.outcomes import Outcomes

__all__ = ["GatewayRequestHandler"]

log = logging.getLogger(__name__)

_REASON_KEPT = 200


class GatewayRequestHandler(RequestHandler):
    """One per connection, made by `server.listen` in place of aiohttp's own."""

    def __init__(self, outcomes: Outcomes, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._outcomes = outcomes

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: too late for another answer
            raise ConnectionError("an answer had started; no error answer can follow")
        request_id = request_id_of(request)
        error: GatewayError
        if status >= 500:  # a failure outside the gateway's handler, which catches its own
            error = InternalError()
            log.error("request %s from %s failed in the HTTP server", request_id,
                      request.remote, exc_info=exc)
        else:
            error = HeadersTooLarge() if isinstance(exc, LineTooLong) else MalformedRequest()
            # On one line, and short: the reason quotes the client's bytes.
            log.warning("request %s from %s refused, not valid HTTP: %r", request_id,
                        request.remote, (message or str(exc))[:_REASON_KEPT])
        response = error_response(error, request_id)
        response.force_close()
        self._outcomes.add(None, request, request_id, error.status, error.code,
                           time.perf_counter_ns())
        return response
