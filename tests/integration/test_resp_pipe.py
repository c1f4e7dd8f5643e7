"""Needs: Redis (tests/conftest.py); some tests start a Redis of their own.

The rate limiter's lean Redis connection (`gateway/store/resp.py`) against a real server:
replies in order, error replies, the handshake, a server that goes away, pauses, refuses or
does not speak RESP;
and the rate limiter on top of it, with Redis up and down.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.config.routes import RateLimit
from gateway.pipeline.ratelimit import RateLimiter
from gateway.store.resp import ClientPipe, RespPipe, Script, open_pipe, pack
from tests.support.services import PrivateRedis


def test_pack_writes_resp_arrays_of_bulk_strings() -> None:
    assert pack([("SET", "k", 1.5), (b"GET", "k")]) == (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n1.5\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")


async def test_replies_come_back_in_order_with_error_replies_in_place(
        redis_url: str, redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    pipe = open_pipe(client)
    assert isinstance(pipe, RespPipe)  # not TLS: the lean connection
    key = f"{redis_prefix}pipe"
    try:
        replies = await pipe.execute([("SET", key, "v"), ("GET", key), ("INCR", key),
                                      ("EVALSHA", "0" * 40, 0), ("EVAL", "return {1, 2}", 0)])
        assert replies[:2] == [b"OK", b"v"]
        assert isinstance(replies[2], ResponseError)  # not an integer: an error, in its place
        assert isinstance(replies[3], NoScriptError)
        assert replies[4] == [1, 2]
        # Many batches in flight at once each get their own replies.
        answers = await asyncio.gather(*(pipe.execute([("ECHO", str(n))]) for n in range(200)))
        assert answers == [[str(n).encode()] for n in range(200)]
    finally:
        await pipe.aclose()
        await client.delete(key)
        await client.aclose()


async def test_scripts_are_loaded_when_redis_does_not_know_them(redis_url: str) -> None:
    pipe = open_pipe(aioredis.Redis.from_url(redis_url))
    unique = secrets.token_hex(4)  # a script this server has never seen
    try:
        assert await Script(f"return {{'{unique}', #KEYS, ARGV[1]}}").run(
            pipe, ["k1", "k2"], [5]) == [unique.encode(), 2, b"5"]
        with pytest.raises(ResponseError, match="nope"):
            await Script(f"return redis.error_reply('nope {unique}')").run(pipe, [], [])
    finally:
        await pipe.aclose()


async def test_handshake_selects_the_database_and_authenticates(
        private_redis: PrivateRedis) -> None:
    admin = aioredis.Redis.from_url(private_redis.url)
    await admin.config_set("requirepass", "s3cret")
    await admin.aclose()
    url = f"redis://:s3cret@127.0.0.1:{private_redis.port}/3"
    client = aioredis.Redis.from_url(url)
    pipe = open_pipe(client)
    try:
        assert await pipe.execute([("SET", "selected", "yes")]) == [b"OK"]
        assert await client.get("selected") == b"yes"  # redis-py, same URL: database 3
        wrong = open_pipe(aioredis.Redis.from_url(
            f"redis://:wrong@127.0.0.1:{private_redis.port}/0"))
        with pytest.raises(RedisError, match="handshake"):
            await wrong.execute([("PING",)])
    finally:
        await pipe.aclose()
        await client.aclose()


async def test_a_server_that_goes_away_fails_the_batch_and_the_next_one_reconnects(
        private_redis: PrivateRedis) -> None:
    pipe = RespPipe(port=private_redis.port, timeout=1.0)
    try:
        assert await pipe.execute([("PING",)]) == [b"PONG"]
        private_redis.stop()
        with pytest.raises((RedisError, OSError)):
            await pipe.execute([("PING",)])
        with pytest.raises(OSError):  # refused: nothing listens
            await pipe.execute([("PING",)])
        private_redis.start()
        assert await pipe.execute([("PING",)]) == [b"PONG"]
    finally:
        await pipe.aclose()


async def test_a_paused_server_times_out_and_the_late_replies_are_not_misread(
        private_redis: PrivateRedis) -> None:
    admin = aioredis.Redis.from_url(private_redis.url)
    pipe = RespPipe(port=private_redis.port, timeout=0.3)
    try:
        await pipe.execute([("SET", "a", "1"), ("SET", "b", "2")])
        await admin.execute_command("CLIENT", "PAUSE", "800", "ALL")
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await pipe.execute([("GET", "a")])
        assert time.monotonic() - started < 0.7
        await asyncio.sleep(0.6)  # the pause ends; the old connection's reply is gone with it
        assert await pipe.execute([("GET", "b")]) == [b"2"]
    finally:
        await pipe.aclose()
        await admin.aclose()


async def test_a_server_speaking_something_else_fails_the_batch_cleanly() -> None:
    async def not_redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()

    server = await asyncio.start_server(not_redis, "127.0.0.1", 0)
    pipe = RespPipe(port=server.sockets[0].getsockname()[1], timeout=1.0)
    try:
        with pytest.raises(RedisError, match="not RESP"):
            await pipe.execute([("PING",)])
    finally:
        await pipe.aclose()
        server.close()
        await server.wait_closed()


async def test_rate_limiter_counts_in_redis_then_locally_while_it_is_down(
        private_redis: PrivateRedis, redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(private_redis.url)
    pipe = RespPipe(port=private_redis.port, timeout=0.5)
    limiter = RateLimiter(pipe, redis_prefix, retry_after=0.2)
    limit = RateLimit(limit=3, period=60.0, per="ip", bucket="test")
    try:
        # A fresh server does not know the script yet: NOSCRIPT, loaded, sent again.
        allowed = [(await limiter.hit(f"{redis_prefix}a", limit))[0] for _ in range(4)]
        assert allowed == [True, True, True, False]
        assert await client.exists(f"{redis_prefix}a") == 1  # counted in Redis
        await client.script_flush()  # as after a Redis restart: the same again
        assert (await limiter.hit(f"{redis_prefix}a", limit))[0] is False
        assert (await limiter.hit(f"{redis_prefix}d", limit))[0] is True
        # A fresh limiter (another process) shares the budget through Redis.
        other = RateLimiter(ClientPipe(client), redis_prefix)  # through redis-py this time
        assert (await other.hit(f"{redis_prefix}a", limit))[0] is False
        private_redis.stop()
        local = [(await limiter.hit(f"{redis_prefix}b", limit))[0] for _ in range(4)]
        assert local == [True, True, True, False]  # still limited, per process
        private_redis.start()
        await asyncio.sleep(0.3)  # past retry_after: Redis is tried again
        assert (await limiter.hit(f"{redis_prefix}c", limit))[0] is True
        restarted = aioredis.Redis.from_url(private_redis.url)  # the old one's socket is dead
        assert await restarted.exists(f"{redis_prefix}c") == 1
        await restarted.aclose()
    finally:
        await pipe.aclose()
        await client.aclose()
