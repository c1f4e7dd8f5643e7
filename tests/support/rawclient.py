"""A client that sends bytes exactly as written and reads the answers back strictly.

No HTTP library sits between the test and the socket: a test can send what no client would
(bare LF, two framings, a request hidden in a body) and see each answer the gateway wrote,
in order, with whether the gateway then closed the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import httptools

__all__ = ["Answer", "Reply", "converse", "error_of", "open_raw", "read_answers"]


@dataclass
class Answer:
    """One answer as a strict client reads it."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def all(self, name: str) -> list[str]:
        wanted = name.lower().encode()
        return [v.decode("latin-1") for k, v in self.headers if k.lower() == wanted]

    @property
    def closes(self) -> bool:
        return (self.header("Connection") or "").lower() == "close"


@dataclass
class Reply:
    """Everything the gateway sent on one connection."""

    answers: list[Answer] = field(default_factory=list)
    interim: list[int] = field(default_factory=list)  # 1xx statuses, in order
    closed: bool = False  # the gateway closed (or reset) the connection
    reset: bool = False
    raw: bytes = b""
    error: str | None = None  # the answer bytes were not valid HTTP/1.1

    @property
    def statuses(self) -> list[int]:
        return [answer.status for answer in self.answers]


class _Reader:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()

    def on_message_begin(self) -> None:
        self._headers, self._body = [], bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            self.reply.interim.append(status)
        else:
            self.reply.answers.append(Answer(status, self._headers, bytes(self._body)))

    def feed(self, data: bytes) -> None:
        if self.reply.error is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.reply.error = str(exc) or type(exc).__name__


async def open_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def converse(port: int, parts: bytes | Sequence[bytes | float], *, answers: int = 1,
                   timeout: float = 3.0, grace: float = 0.15, half_close: bool = False) -> Reply:
    """Send `parts` (bytes, or bytes and pauses in seconds between them) on a new connection
    and read what comes back: until the gateway closes, or until `answers` answers have come
    and `grace` seconds more brought nothing (an answer too many would show), or `timeout`.
    Answers to HEAD cannot be told from the bytes alone: read those from `Reply.raw`.
    `half_close` shuts the client's write side once everything is sent."""
    reader, writer = await open_raw(port)
    reply = Reply()
    parser = _Reader(reply)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    async def pump() -> None:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return
            wait = left
            if len(reply.answers) >= answers:
                wait = min(left, grace)
            try:
                data = await asyncio.wait_for(reader.read(65536), wait)
            except TimeoutError:
                if len(reply.answers) >= answers or loop.time() >= deadline:
                    return
                continue
            except (ConnectionResetError, BrokenPipeError):
                reply.closed = reply.reset = True
                return
            if not data:
                reply.closed = True
                return
            reply.raw += data
            parser.feed(data)

    reading = asyncio.ensure_future(pump())
    try:
        for part in [parts] if isinstance(parts, bytes) else parts:
            if isinstance(part, int | float):
                await asyncio.sleep(part)
                continue
            if reading.done():
                break
            try:
                writer.write(part)
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                break
        if half_close and not reading.done():
            with contextlib.suppress(OSError):
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.shutdown(socket.SHUT_WR)
        await reading
    finally:
        reading.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return reply


def read_answers(raw: bytes) -> Reply:
    """The answers in `raw` (none of them to HEAD), read strictly."""
    reply = Reply(raw=raw)
    _Reader(reply).feed(raw)
    return reply


def error_of(answer: Answer) -> dict[str, object]:
    """The contract's error body of `answer`, checked: JSON with exactly `error`, `message`
    and `request_id`, the id the same as the X-Request-Id header."""
    assert (answer.header("Content-Type") or "").startswith("application/json"), answer
    body = json.loads(answer.body)
    assert isinstance(body, dict) and set(body) == {"error", "message", "request_id"}, body
    assert isinstance(body["message"], str) and body["message"], body
    assert body["request_id"] == answer.header("X-Request-Id"), (body, answer.headers)
    return body
