"""A lean Redis connection for the hot path: batches of commands on one socket, in order.

redis-py's asyncio client spends about 120 us of CPU per round trip here, most of it on its
own machinery (pool checkout, retry wrapper, timeouts, observability hooks): more than the
rest of a request. `RespPipe` speaks RESP itself over one asyncio protocol, hiredis parsing
the replies, one write and one future per batch: about 60 us, system calls included. It
serves the hot path (key-cache lookups and fills, the rate limiter's script calls); the
rest (pub/sub, deletions, the admin UI) keeps redis-py.

Replies come back in the order commands were written, so a batch is answered by the next
`len(batch)` replies. Error replies are returned as `ResponseError` (`NoScriptError` for
NOSCRIPT) instances in the list, as redis-py's pipelines do with `raise_on_error=False`.
A lost connection, or a batch unanswered after `timeout`, fails every batch in flight
(`ConnectionError` / `TimeoutError` from redis.exceptions) and drops the connection: later
replies could no longer be matched to their commands. The next batch reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["ClientPipe", "Command", "Pipe", "RespPipe", "Script", "call", "open_pipe", "pack"]

Command = Sequence[bytes | str | int | float]


class Pipe(Protocol):
    """Batches of commands to Redis, the replies in order (error replies as instances)."""

    def execute(self, commands: Sequence[Command]) -> Awaitable[list[object]]: ...

    async def aclose(self) -> None: ...


async def call(pipe: Pipe, *command: bytes | str | int | float) -> object:
    """One command's reply; an error reply is raised."""
    reply = (await pipe.execute([command]))[0]
    if isinstance(reply, Exception):
        raise reply
    return reply


class Script:
    """A Lua script run by its SHA1 (EVALSHA), loaded again when Redis has lost it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (Redis's script id)

    def command(self, keys: Sequence[str], args: Sequence[str | int | float]) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    def load(self) -> Command:
        return ("SCRIPT", "LOAD", self.source)

    async def run(self, pipe: Pipe, keys: Sequence[str],
                  args: Sequence[str | int | float]) -> object:
        """The script's reply; an error reply is raised. NOSCRIPT: loaded, then run again."""
        command = self.command(keys, args)
        reply = (await pipe.execute([command]))[0]
        if isinstance(reply, NoScriptError):
            reply = (await pipe.execute([self.load(), command]))[1]
        if isinstance(reply, Exception):
            raise reply
        return reply


def open_pipe(client: aioredis.Redis) -> Pipe:
    """A `RespPipe` to the server `client` talks to, with its timeout; over TLS, the
    client's own pipelines."""
    return RespPipe.for_client(client) or ClientPipe(client)


class ClientPipe:
    """The same through redis-py (TLS, and whatever else its connection classes know)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def execute(self, commands: Sequence[Command]) -> list[object]:
        pipeline = self._client.pipeline(transaction=False)
        for command in commands:
            pipeline.execute_command(*command)
        return await pipeline.execute(raise_on_error=False)

    async def aclose(self) -> None:
        """The client is not ours to close."""


def pack(commands: Sequence[Command]) -> bytes:
    """Commands in RESP (arrays of bulk strings), ready to write as one."""
    parts: list[bytes] = []
    for command in commands:
        parts.append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _reply(value: Any) -> object:
    if isinstance(value, ResponseError) and str(value).startswith("NOSCRIPT"):
        return NoScriptError(str(value))
    return value


class _Batch:
    __slots__ = ("expected", "future", "replies", "timer")

    def __init__(self, expected: int, future: asyncio.Future[list[object]],
                 timer: asyncio.TimerHandle) -> None:
        self.expected = expected
        self.future = future
        self.replies: list[object] = []
        self.timer = timer


class _Protocol(asyncio.Protocol):
    """One connection: writes batches, hands each its replies as they complete."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._waiting: collections.deque[_Batch] = collections.deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, commands: Sequence[Command], timeout: float) -> asyncio.Future[list[object]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[object]] = loop.create_future()
        timer = loop.call_later(timeout, self._expire, future)
        self._waiting.append(_Batch(len(commands), future, timer))
        assert self.transport is not None
        self.transport.write(pack(commands))
        return future

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                value = self._reader.gets()
            except hiredis.ProtocolError as exc:  # not RESP: nothing after it can be trusted
                self.close(RedisConnectionError(f"Redis sent something not RESP: {exc}"))
                return
            if value is False:
                return
            if not self._waiting:
                self.close(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            batch = self._waiting[0]
            batch.replies.append(_reply(value))
            if len(batch.replies) == batch.expected:
                self._waiting.popleft()
                batch.timer.cancel()
                if not batch.future.done():
                    batch.future.set_result(batch.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(RedisConnectionError(f"connection to Redis lost: {exc!r}"))

    def _expire(self, future: asyncio.Future[list[object]]) -> None:
        if not future.done():
            self.close(RedisTimeoutError("Redis did not answer in time"))

    def close(self, error: Exception) -> None:
        """Drop the connection; every batch in flight fails with `error`."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        while self._waiting:
            batch = self._waiting.popleft()
            batch.timer.cancel()
            if not batch.future.done():
                batch.future.set_exception(error)


class RespPipe:
    """Batches of commands to one Redis server, over one connection opened when needed."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 6379, path: str | None = None,
                 db: int = 0, username: str | None = None, password: str | None = None,
                 timeout: float = 1.0) -> None:
        self._host, self._port, self._path = host, port, path
        self._timeout = timeout
        self._handshake: list[Command] = []
        if password is not None:
            self._handshake.append(("AUTH", username, password) if username
                                   else ("AUTH", password))
        if db:
            self._handshake.append(("SELECT", db))
        self._protocol: _Protocol | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def for_client(cls, client: aioredis.Redis) -> RespPipe | None:
        """A pipe to the server `client` talks to; None over TLS (left to redis-py)."""
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        if issubclass(pool.connection_class, SSLConnection):
            return None
        path = kwargs.get("path") if issubclass(pool.connection_class,
                                                UnixDomainSocketConnection) else None
        return cls(host=kwargs.get("host", "127.0.0.1"), port=int(kwargs.get("port", 6379)),
                   path=path, db=int(kwargs.get("db", 0) or 0),
                   username=kwargs.get("username"), password=kwargs.get("password"),
                   timeout=float(kwargs.get("socket_timeout") or 1.0))

    def execute(self, commands: Sequence[Command]) -> Awaitable[list[object]]:
        """The replies to `commands`, in order. Raises `redis.exceptions.RedisError` (or
        `OSError` when the server cannot be reached).

        Connected, it writes at once and returns the batch's future itself: a caller may
        wait on it, or attach a callback, without a coroutine or task in between.
        """
        protocol = self._protocol
        if protocol is None or protocol.closed:
            return self._connect_and_send(commands)
        return protocol.send(commands, self._timeout)

    async def _connect_and_send(self, commands: Sequence[Command]) -> list[object]:
        protocol = await self._connected()
        return await protocol.send(commands, self._timeout)

    async def _connected(self) -> _Protocol:
        async with self._lock:  # one connection attempt at a time
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            loop = asyncio.get_running_loop()
            opening = (loop.create_unix_connection(_Protocol, self._path) if self._path
                       else loop.create_connection(_Protocol, self._host, self._port))
            try:
                _, protocol = await asyncio.wait_for(opening, self._timeout)
            except TimeoutError as exc:
                raise RedisTimeoutError("timed out connecting to Redis") from exc
            if self._handshake:
                for reply in await protocol.send(self._handshake, self._timeout):
                    if isinstance(reply, Exception):
                        protocol.close(RedisConnectionError(str(reply)))
                        raise RedisConnectionError(f"Redis refused the handshake: {reply}")
            self._protocol = protocol
            return protocol

    async def aclose(self) -> None:
        if self._protocol is not None:
            self._protocol.close(RedisConnectionError("pipe closed"))
            self._protocol = None
