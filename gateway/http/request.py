"""The request as the pipeline sees it: what the edge parsed, with no framework object behind it.

The edge fills one `RequestView` per request from the parser's callbacks and the header pass
in `gateway.pipeline.headers`; steps read it and never write it.
"""

from __future__ import annotations

import itertools
import os
import re

__all__ = ["RequestView", "request_id_for", "reseed_request_ids"]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Fresh ids: random per process (and per fork, see `reseed_request_ids`), then counted, so
# they are unique without a system call per request. They name requests; they guard nothing.
_prefix = os.urandom(8).hex()
_counter = itertools.count()


def reseed_request_ids() -> None:
    """A forked worker must not count on from its parent's ids."""
    global _prefix, _counter
    _prefix, _counter = os.urandom(8).hex(), itertools.count()


os.register_at_fork(after_in_child=reseed_request_ids)


def request_id_for(given: str | None) -> str:
    """The client's X-Request-Id when it is safe to echo and log, else a fresh one."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return f"{_prefix}{next(_counter):08x}"


class RequestView:
    """One request's line and the headers the gateway reads itself; the rest travel as bytes."""

    __slots__ = (
        "authorization",
        "content_length",
        "expects_continue",
        "forwarded_for",
        "forwarded_host",
        "forwarded_proto",
        "has_body",
        "headers",
        "host",
        "is_chunked",
        "keep_alive",
        "method",
        "path",
        "peer",
        "query",
        "request_id",
        "scheme",
        "target",
        "upgrade",
        "version",
    )

    def __init__(self, method: str, target: bytes, peer: str, scheme: str) -> None:
        self.method = method
        self.target = target  # exactly as sent: path and query, undecoded
        path, _, query = target.partition(b"?")
        self.path = path.decode("utf-8", "replace")  # only ASCII paths are ever matched
        self.query = query
        self.peer = peer  # the socket peer's address text
        self.scheme = scheme
        self.version = "1.1"
        self.keep_alive = True
        # What the header pass found (`gateway.pipeline.headers.read_headers`).
        self.headers: list[tuple[bytes, bytes]] = []  # the ones that may travel upstream
        self.authorization: list[str] = []
        self.host: bytes | None = None
        self.request_id: str | None = None  # the client's X-Request-Id, unchecked
        self.forwarded_for: list[bytes] = []
        self.forwarded_proto: bytes | None = None
        self.forwarded_host: bytes | None = None
        self.content_length: int | None = None
        self.is_chunked = False
        self.has_body = False  # chunked, or a length above zero
        self.expects_continue = False
        self.upgrade: bytes | None = None

    def __repr__(self) -> str:
        # SECURITY: never the Authorization value.
        return f"RequestView({self.method} {self.path!r} from {self.peer})"
