"""The admin UI's access log: no emailed link's token, and no query string, ever written.

A password-reset or confirmation link read from a log file must be worth nothing, so the
token segment of those paths is replaced, and query strings (a `next` may hold a link) are
left out.
"""

from __future__ import annotations

import re

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

__all__ = ["RedactingAccessLogger", "redact_path"]

_TOKEN_PATHS = re.compile(r"^/(verify|password/reset|keys/confirm)/[^/]+")


def redact_path(path: str) -> str:
    # SECURITY: tokens in link paths never reach the log.
    return _TOKEN_PATHS.sub(r"/\1/<redacted>", path)


class RedactingAccessLogger(AbstractAccessLogger):
    """`<ip> "<method> <path>" <status> <bytes> <seconds>s` with tokens redacted."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %d %d %.3fs', request.remote, request.method,
                         redact_path(request.path), response.status, response.body_length,
                         time)
